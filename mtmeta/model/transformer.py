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


def embedding_from_layout(embed_dim: int, layout: dict) -> nn.Module:
    if layout.get("kind", "tables") == "ulr":
        return UniversalLexicalEmbedding.from_layout(embed_dim, layout)
    return LanguageTables.from_layout(embed_dim, layout)


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


class MultilingualTransformer(FairseqEncoderDecoderModel):
    def __init__(self, cfg: ModelConfig, src_embed: nn.Module, tgt_vocab_size: int):
        fc = fairseq_config(cfg)
        tgt_dict = _placeholder_dictionary(tgt_vocab_size)
        tgt_embed = nn.Embedding(tgt_vocab_size, cfg.embed_dim, padding_idx=PAD)
        nn.init.normal_(tgt_embed.weight, mean=0, std=cfg.embed_dim**-0.5)
        nn.init.constant_(tgt_embed.weight[PAD], 0)
        encoder = TransformerEncoderBase(fc, _placeholder_dictionary(N_SPECIAL), src_embed)
        decoder = TransformerDecoderBase(fc, tgt_dict, tgt_embed)
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
        """Replace a ULR embedding by equivalent plain tables (inference)."""
        if isinstance(self.src_embed, UniversalLexicalEmbedding):
            self.encoder.embed_tokens = self.src_embed.fold()

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
    if cfg.embedding == "ulr":
        if ulr is None:
            raise ValueError("ULR embedding needs query and key vectors (prepare with ulr_vectors: true)")
        en_vectors = torch.as_tensor(ulr["en_vectors"], dtype=torch.float32)
        key_ids = torch.as_tensor(ulr["key_ids"], dtype=torch.long)
        embed = UniversalLexicalEmbedding(cfg.embed_dim, en_vectors.shape[1], tgt_vocab_size, len(key_ids), cfg.ulr_tau)
        embed.set_english(en_vectors, key_ids)
        for lang, size in src_vocabs.items():
            name = "src" if joint else lang
            q = ulr["queries"].get(name)
            embed.add_language(lang, size, table="src" if joint else None, queries=None if q is None else torch.as_tensor(q))
    else:
        embed = LanguageTables(cfg.embed_dim)
        for lang, size in src_vocabs.items():
            embed.add_language(lang, size, table="src" if joint else None)
    return MultilingualTransformer(cfg, embed, tgt_vocab_size)
