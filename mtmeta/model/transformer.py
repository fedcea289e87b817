"""The multilingual Transformer: one encoder shared by all source languages,
one English decoder, fairseq layers throughout."""
from __future__ import annotations

import torch
from fairseq.data import Dictionary
from fairseq.models import FairseqEncoderDecoderModel
from fairseq.models.transformer import TransformerConfig, TransformerDecoderBase, TransformerEncoderBase
from torch import nn

from data_prep.vocab import N_SPECIAL, PAD
from mtmeta.config import ModelConfig

from .embeddings import LanguageTables
from .ulr import UniversalLexicalEmbedding


# The source embeddings, by the name model.embedding gives them. Each implements
# the interface documented in embeddings.py; nothing else asks which one it holds.
EMBEDDINGS: dict[str, type[nn.Module]] = {cls.kind: cls for cls in (LanguageTables, UniversalLexicalEmbedding)}


def embedding_class(kind: str) -> type[nn.Module]:
    if kind not in EMBEDDINGS:
        raise ValueError(f"source embedding {kind!r} unknown ({', '.join(EMBEDDINGS)})")
    return EMBEDDINGS[kind]


def needs_vectors(cfg: ModelConfig) -> bool:
    """Whether building this model needs the prepared folder's aligned vectors."""
    return embedding_class(cfg.embedding).needs_vectors


def embedding_from_layout(embed_dim: int, layout: dict) -> nn.Module:
    return embedding_class(layout.get("kind", "tables")).from_layout(embed_dim, layout)


def fairseq_config(cfg: ModelConfig) -> TransformerConfig:
    fc = TransformerConfig()
    fc.dropout = cfg.dropout
    fc.attention_dropout = cfg.attention_dropout
    fc.activation_dropout = 0.0
    for side, layers in ((fc.encoder, cfg.encoder_layers), (fc.decoder, cfg.decoder_layers)):
        side.embed_dim = cfg.embed_dim
        side.ffn_embed_dim = cfg.ffn_dim
        side.layers = layers
        side.attention_heads = cfg.heads
        side.normalize_before = True  # pre-norm: stable without long warmup on small data
    fc.decoder.input_dim = fc.decoder.output_dim = cfg.embed_dim
    fc.max_source_positions = fc.max_target_positions = cfg.max_positions
    fc.share_decoder_input_output_embed = True
    return fc


def _placeholder_dictionary(size: int) -> Dictionary:
    """fairseq layers only read len() and the special indices of a
    Dictionary; the real pieces live in the sentencepiece model."""
    d = Dictionary()
    for i in range(N_SPECIAL, size):
        d.add_symbol(f"<{i}>", n=1)
    return d


class EnglishDecoder(TransformerDecoderBase):
    def output_layer(self, features: torch.Tensor) -> torch.Tensor:
        # fairseq hands over [B, T, C] as a transposed view. With the tied output
        # weight frozen (adapting emb / emb_enc), torch.matmul then runs a batched
        # matmul over B expanded copies of the [V, C] weight in forward and backward
        # (~2x slower steps); flattening first is the mm that matmul already does
        # when the weight is trained, so tuning everything gives bit-identical results.
        if self.adaptive_softmax is not None:
            return features
        batch, length, dim = features.shape
        if batch * length == 0:
            return self.output_projection(features)
        return self.output_projection(features.reshape(batch * length, dim)).view(batch, length, -1)


class MultilingualTransformer(FairseqEncoderDecoderModel):
    def __init__(self, cfg: ModelConfig, src_embed: nn.Module, tgt_vocab_size: int):
        fc = fairseq_config(cfg)
        tgt_dict = _placeholder_dictionary(tgt_vocab_size)
        tgt_embed = nn.Embedding(tgt_vocab_size, cfg.embed_dim, padding_idx=PAD)
        nn.init.normal_(tgt_embed.weight, mean=0, std=cfg.embed_dim**-0.5)
        nn.init.constant_(tgt_embed.weight[PAD], 0)
        encoder = TransformerEncoderBase(fc, _placeholder_dictionary(N_SPECIAL), src_embed)
        decoder = EnglishDecoder(fc, tgt_dict, tgt_embed)
        super().__init__(encoder, decoder)
        self.cfg = cfg
        self.tgt_vocab_size = tgt_vocab_size

    @property
    def src_embed(self) -> nn.Module:
        return self.encoder.embed_tokens

    def layout(self) -> dict:
        return {"src_embed": self.src_embed.layout(), "tgt_vocab_size": self.tgt_vocab_size}

    @classmethod
    def from_layout(cls, cfg: ModelConfig, layout: dict) -> "MultilingualTransformer":
        return cls(cfg, embedding_from_layout(cfg.embed_dim, layout["src_embed"]), layout["tgt_vocab_size"])

    def fold_embeddings(self) -> None:
        """Replace the source embedding by equivalent plain tables (inference)."""
        folded = self.src_embed.fold()
        if folded is not self.src_embed:
            self.encoder.embed_tokens = folded

    SRC_EMBED_PREFIX = "encoder.embed_tokens."

    def source_parameter_roles(self) -> dict[str, str]:
        """The source embedding's parameter roles (embeddings.py), by this
        model's parameter names."""
        return {self.SRC_EMBED_PREFIX + n: role for n, role in self.src_embed.parameter_roles().items()}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parts, for choosing what adaptation tunes."""
        return {
            "src_embed": list(self.src_embed.parameters()),
            "encoder": [p for n, p in self.encoder.named_parameters() if not n.startswith("embed_tokens.")],
            "decoder": list(self.decoder.parameters()),
        }

    def count_parameters(self) -> dict[str, int]:
        groups = self.parameter_groups()
        return {name: sum(p.numel() for p in ps) for name, ps in groups.items()}


def build_model(
    cfg: ModelConfig,
    tgt_vocab_size: int,
    src_vocabs: dict[str, int],
    joint: bool = False,
    ulr: dict | None = None,
) -> MultilingualTransformer:
    """src_vocabs: language -> source vocabulary size. In joint mode all
    languages share one table named 'src'. With cfg.embedding == 'ulr',
    `ulr` gives the fixed vectors: {'en_vectors': [V_en, d_q], 'key_ids': [K],
    'queries': {table name: [V, d_q]}}."""
    cfg.validate()
    embed = embedding_class(cfg.embedding).build(cfg.embed_dim, tgt_vocab_size, src_vocabs, joint=joint, vectors=ulr, tau=cfg.ulr_tau)
    return MultilingualTransformer(cfg, embed, tgt_vocab_size)
