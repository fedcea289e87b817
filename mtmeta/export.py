"""Export to CTranslate2, and translation with the exported model; and
`mtmeta export --format release` (export_release): the weights-only,
checksummed release folder of mtmeta/release.py with its model card
(mtmeta/model_card.py), which every command reads as a checkpoint.

`mtmeta export --checkpoint X.pt --format ctranslate2 --output DIR` writes a
CTranslate2 model directory (model.bin, config.json and CTranslate2's
vocabulary files) plus what mtmeta needs to use it on its own:

* the sentencepiece models (`en.model`, `src-<table>.model`);
* `mtmeta_export.json`: each language's source table, vocabulary file and
  offset into the model's global source id space, the model config, the
  decoding bounds, and the SHA-256 of the checkpoint it came from.

The spec is built the way CTranslate2's own fairseq converter
(ctranslate2/converters/fairseq.py) builds it, using that module's layer
copiers on our fairseq encoder and decoder: pre-norm Transformer with final
layer norms, ReLU, fairseq's sinusoidal positions (rows from padding_idx+1
on, i.e. fairseq's padding offset), embeddings scaled by sqrt(d), the output
projection tied to the decoder's input embedding, decoding started with EOS
and an EOS appended to the source. Our source embedding is not one table: a
ULR embedding is folded into per-language tables first and those tables are
laid out as the single global-id matrix the encoder effectively reads.

Source tokens given to CTranslate2 name global ids: `<s> <blank> </s> <unk>`
for ids 0-3 (fairseq's specials, pad named <blank> as CTranslate2 expects),
and `g<id>` for a global id >= 4 (a language's local sentencepiece id plus
its offset). Target tokens are the English sentencepiece pieces (pad as
<blank>), so the exported model is usable with sentencepiece alone.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from data_prep.vocab import EOS, N_SPECIAL, PAD, Vocab
from .decoding import MAX_LEN_A, MAX_LEN_B, Progress, cut_inputs, length_batches, max_output_len, strip_output
from .errors import CheckpointError, ConfigError
from .safe_io import check_replaceable_folder, sha256_file, staged_folder

FORMAT = 1
META = "mtmeta_export.json"
FORMATS = ("ctranslate2", "release")
QUANTIZATIONS = ("int8", "int16", "float32", "bfloat16")
COMPUTE_TYPES = ("auto", "int8", "int16", "float32", "bfloat16")
SPECIAL_TOKENS = ("<s>", "<blank>", "</s>", "<unk>")  # ids 0..3 (BOS, PAD, EOS, UNK)


def _ct2():
    try:
        import ctranslate2
    except ImportError:
        raise ConfigError("CTranslate2 is not installed (pip install ctranslate2; see pyproject.toml for the version)") from None
    return ctranslate2


def source_token(global_id: int) -> str:
    return SPECIAL_TOKENS[global_id] if global_id < N_SPECIAL else f"g{global_id}"


def target_tokens(vocab: Vocab) -> list[str]:
    pieces = vocab.pieces()
    return list(SPECIAL_TOKENS) + pieces[N_SPECIAL:]


# --- export -----------------------------------------------------------------------


def build_spec(bundle):
    """A ctranslate2 TransformerSpec holding `bundle`'s weights (fp32)."""
    import copy

    from ctranslate2.converters import fairseq as cf
    from ctranslate2.specs import common_spec, transformer_spec
    from torch import nn

    model = copy.deepcopy(bundle.model).cpu().float().eval()
    model.requires_grad_(False)
    model.fold_embeddings()
    cfg = model.cfg
    enc, dec = model.encoder, model.decoder
    for side in (enc, dec):  # what the spec below assumes of fairseq_config()
        if side.layernorm_embedding is not None or side.layer_norm is None or side.embed_positions is None:
            raise ConfigError("export: the model is not a pre-norm Transformer with sinusoidal positions and no embedding layer norm")
    if dec.project_in_dim is not None or dec.project_out_dim is not None or dec.output_projection.weight is not dec.embed_tokens.weight:
        raise ConfigError("export: the decoder's output projection is not tied to its input embedding")
    spec = transformer_spec.TransformerSpec.from_config(
        (cfg.encoder_layers, cfg.decoder_layers),
        cfg.heads,
        pre_norm=True,
        activation=common_spec.Activation.RELU,  # fairseq's default activation_fn
    )
    with torch.no_grad():
        n_src = model.src_embed.num_embeddings
        table = model.src_embed(torch.arange(n_src)).float()  # the global-id matrix the encoder reads
        enc.embed_tokens = nn.Embedding.from_pretrained(table, freeze=True, padding_idx=PAD)
        cf.set_transformer_encoder(spec.encoder, enc)
        cf.set_transformer_decoder(spec.decoder, dec)
    spec.register_source_vocabulary([source_token(i) for i in range(n_src)])
    spec.register_target_vocabulary(target_tokens(bundle.tgt_vocab))
    spec.config.decoder_start_token = SPECIAL_TOKENS[EOS]  # fairseq starts decoding with EOS
    spec.config.add_source_eos = True  # and ends every source with it
    spec.config.layer_norm_epsilon = 1e-5  # torch's LayerNorm default, as fairseq uses it
    return spec


def export_ctranslate2(checkpoint: str | Path, output: str | Path, quantization: str = "float32", force: bool = False, log=None) -> dict:
    """Write the CTranslate2 export of `checkpoint` to `output`; return its metadata."""
    from ctranslate2.converters.converter import Converter

    from .checkpoint import bundle_from_state, read_model_state

    _ct2()
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"--quantization {quantization!r}: expected one of {', '.join(QUANTIZATIONS)}")
    log = log or (lambda *_: None)
    out = Path(output)
    check_replaceable_folder(out, force, META, "export")
    state = read_model_state(checkpoint)  # a checkpoint file or a release folder
    bundle = bundle_from_state(state, checkpoint)
    embedding = bundle.model.src_embed.layout().get("kind", "tables")
    spec = build_spec(bundle)

    class _Spec(Converter):
        def _load(self):
            return spec

    with staged_folder(out) as tmp:  # check_replaceable_folder allowed `out`: new, empty or an earlier one
        _Spec().convert(str(tmp), quantization=quantization, force=True)  # tmp exists (empty)
        emb = bundle.model.src_embed
        languages = {}
        for lang in bundle.languages():
            table = emb.lang_table[lang]
            languages[lang] = {"table": table, "offset": emb.offset(lang), "vocab": f"src-{table}.model", "vocab_size": len(bundle.src_vocabs[table])}
        for table, vocab in bundle.src_vocabs.items():
            vocab.save(tmp / f"src-{table}.model")
        bundle.tgt_vocab.save(tmp / "en.model")
        import ctranslate2

        meta = {
            "format": FORMAT,
            "engine": "ctranslate2",
            "ctranslate2_version": ctranslate2.__version__,
            "quantization": quantization,
            "source_checkpoint": _source_info(checkpoint, state),
            "step": state.get("step"),
            "embedding": embedding + (" (folded into tables)" if embedding == "ulr" else ""),
            "languages": languages,
            "source_tokens": "<s> <blank> </s> <unk> for global ids 0-3; g<id> for global id = local sentencepiece id + the language's offset",
            "target_vocab": "en.model",
            "target_tokens": "the English sentencepiece pieces; <blank> for pad",
            "source_vocab_size": int(emb.num_embeddings),
            "target_vocab_size": len(bundle.tgt_vocab),
            "max_positions": bundle.model.cfg.max_positions,
            "decoding": {"max_len_a": MAX_LEN_A, "max_len_b": MAX_LEN_B, "max_output": bundle.model.cfg.max_positions - 2},
            "model_config": state["model_config"],
        }
        (tmp / META).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    log(f"exported {checkpoint} to {out} (CTranslate2 {meta['ctranslate2_version']}, {quantization}, {size / 1e6:.1f} MB, languages {', '.join(languages)})")
    return {"output": str(out), **{k: meta[k] for k in ("quantization", "ctranslate2_version", "source_checkpoint", "embedding", "languages")}}


def _source_info(checkpoint: str | Path, state: dict) -> dict:
    """Path, SHA-256 and bytes of what was exported: a checkpoint file, or a
    release folder (its manifest's SHA-256, which covers every file)."""
    if "release" in state:
        from .release import read_manifest

        files = read_manifest(checkpoint)["files"]
        return {"path": str(checkpoint), "release": True, "sha256": state["release"]["manifest_sha256"],
                "bytes": sum(f["bytes"] for f in files.values())}
    return {"path": str(checkpoint), "sha256": sha256_file(checkpoint), "bytes": Path(checkpoint).stat().st_size}


def export_release(checkpoint: str | Path, output: str | Path, dtype: str = "float16", force: bool = False,
                   data: str | None = None, command: str = "", max_file_bytes: int = 0, log=None) -> dict:
    """`mtmeta export --format release`: the release folder of `checkpoint`
    (mtmeta/release.py) with its model card (mtmeta/model_card.py)."""
    import time

    from .checkpoint import bundle_from_state, read_checkpoint
    from .model_card import build_card
    from .release import MAX_FILE_BYTES, write_release

    log = log or (lambda *_: None)
    path = Path(checkpoint)
    if path.is_dir():
        raise ConfigError(f"--checkpoint {path}: a folder; --format release reads a checkpoint file (a release is already one)")
    state = read_checkpoint(path)
    bundle_from_state(state, path)  # the weights must build the recorded model before anything is written
    ts = state.get("train_state") or state.get("snapshot") or {}
    provenance = {
        "checkpoint": {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size},
        "step": ts.get("step"),
        "tokens": ts.get("tokens"),
        "train_seconds": ts.get("elapsed"),
        "run_config": state.get("run_config") or {},
        "history": state.get("history") or [],
        "made": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": command,
    }
    result = write_release(
        state, output, dtype=dtype, max_file_bytes=max_file_bytes or MAX_FILE_BYTES, force=force, log=log,
        provenance=provenance, card=lambda info: build_card(state, info, checkpoint, command=command, data=data),
    )
    return {**result, "checkpoint": str(path), "step": provenance["step"], "tokens": provenance["tokens"]}


# --- translation with an export -------------------------------------------------------


def is_export(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / META).is_file() and (p / "model.bin").is_file()


def ct2_device(device: str = "auto") -> str:
    ct2 = _ct2()
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device {device!r} unknown (auto, cpu, cuda)")
    has_cuda = ct2.get_cuda_device_count() > 0
    if device == "cuda" and not has_cuda:
        raise ConfigError("device cuda: CTranslate2 sees no CUDA GPU on this machine")
    return "cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu"


def resolve_compute_type(name: str, device: str) -> str:
    """`name` if this hardware runs it (auto: CTranslate2's choice); one clear ConfigError otherwise."""
    ct2 = _ct2()
    if name not in COMPUTE_TYPES:
        raise ConfigError(f"--compute-type {name!r}: expected one of {', '.join(COMPUTE_TYPES)}")
    if name == "auto":
        return name
    supported = ct2.get_supported_compute_types(device)
    if name not in supported:
        raise ConfigError(
            f"--compute-type {name}: this {device} cannot run it with CTranslate2 {ct2.__version__} "
            f"(supported here: {', '.join(sorted(supported))}, or auto)"
        )
    return name


class ExportedModel:
    """An mtmeta CTranslate2 export, ready to translate."""

    def __init__(self, path: str | Path, compute_type: str = "auto", device: str = "auto", threads: int = 0):
        ct2 = _ct2()
        self.path = Path(path)
        self.meta = read_export_meta(self.path)
        self.device = ct2_device(device)
        self.compute_type = resolve_compute_type(compute_type, self.device)
        self.threads = threads or torch.get_num_threads()  # the same thread setting as torch's
        self.max_positions = int(self.meta["max_positions"])
        try:
            self.translator = ct2.Translator(str(self.path), device=self.device, compute_type=self.compute_type, intra_threads=self.threads, inter_threads=1)
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f"{self.path}: CTranslate2 cannot load this export ({str(e).splitlines()[0]})") from None
        self.tgt_vocab = Vocab.load(self.path / self.meta["target_vocab"], "en")
        self._src_vocabs: dict[str, Vocab] = {}
        self._tgt_index = {tok: i for i, tok in enumerate(target_tokens(self.tgt_vocab))}

    def languages(self) -> list[str]:
        return list(self.meta["languages"])

    def src_vocab(self, lang: str) -> Vocab:
        info = self.meta["languages"].get(lang)
        if info is None:
            raise ConfigError(
                f"the exported model does not know source language {lang!r} (knows: {', '.join(self.languages())}); "
                f"adapt a checkpoint with `mtmeta adapt --lang {lang}` and export that"
            )
        if info["table"] not in self._src_vocabs:
            self._src_vocabs[info["table"]] = Vocab.load(self.path / info["vocab"], info["table"])
        return self._src_vocabs[info["table"]]

    def translate(self, lang: str, sentences: list[str], beam: int = 4, batch_sentences: int = 64,
                  max_len_a: float = MAX_LEN_A, max_len_b: int = MAX_LEN_B, progress: bool | str = False) -> list[str]:
        """Detokenised English for each sentence, in input order; same
        batches, length bounds and search as mtmeta.decoding.translate."""
        if not sentences:
            return []
        ids = self.src_vocab(lang).encode_batch(sentences)
        return [self.tgt_vocab.decode(t) for t in self.generate_ids(lang, ids, beam, batch_sentences, max_len_a, max_len_b, progress)]

    def generate_ids(self, lang: str, ids: list[list[int]], beam: int = 4, batch_sentences: int = 64,
                     max_len_a: float = MAX_LEN_A, max_len_b: int = MAX_LEN_B, progress: bool | str = False) -> list[list[int]]:
        self.src_vocab(lang)
        offset = int(self.meta["languages"][lang]["offset"])
        ids = cut_inputs(ids, self.max_positions, f"translate {lang}", progress)
        out: list[list[int]] = [[] for _ in ids]
        unk = self._tgt_index["<unk>"]
        with Progress(len(ids), f"translate {lang}", progress) as bar:
            bar.update(sum(1 for s in ids if not s))  # empty lines: nothing to translate
            for batch in length_batches(ids, batch_sentences):
                bounds = [max_output_len(len(ids[i]), self.max_positions, max_len_a, max_len_b) for i in batch]
                source = [[source_token(t + offset if t >= N_SPECIAL else t) for t in ids[i]] for i in batch]
                results = self.translator.translate_batch(
                    source,
                    beam_size=beam,
                    max_decoding_length=max(bounds),
                    min_decoding_length=1,  # fairseq's min_len: no empty output
                    max_input_length=0,  # cut above, with a warning
                    length_penalty=1.0,  # fairseq's lenpen (scores / length)
                    suppress_sequences=[[SPECIAL_TOKENS[PAD]]],  # fairseq never picks pad
                    return_scores=False,
                )
                for i, bound, r in zip(batch, bounds, results):
                    out[i] = strip_output((self._tgt_index.get(t, unk) for t in r.hypotheses[0]), bound)
                bar.update(len(batch))
        return out


def read_export_meta(path: str | Path) -> dict:
    """The export's metadata; CheckpointError (one line) for anything that is not an mtmeta export."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: not found (an exported model folder is made by `mtmeta export`)")
    if p.is_file():
        raise CheckpointError(
            f"{p}: a file, not a CTranslate2 export; --engine ctranslate2 reads the folder written by "
            f"`mtmeta export --checkpoint {p.name} --format ctranslate2 --output DIR`"
        )
    if not (p / META).is_file() or not (p / "model.bin").is_file():
        raise CheckpointError(f"{p}: not an mtmeta CTranslate2 export (no {META} and model.bin; make one with `mtmeta export`)")
    try:
        meta = json.loads((p / META).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{p / META}: unreadable ({type(e).__name__}); export again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("engine") != "ctranslate2" or not isinstance(meta.get("languages"), dict):
        raise CheckpointError(f"{p / META}: not an mtmeta CTranslate2 export of format {FORMAT}; export again")
    return meta


def open_export(path: str | Path, compute_type: str = "auto", device: str = "auto", threads: int = 0) -> ExportedModel:
    return ExportedModel(path, compute_type, device, threads)


__all__ = [
    "COMPUTE_TYPES", "FORMATS", "QUANTIZATIONS", "ExportedModel", "build_spec", "ct2_device", "export_ctranslate2", "export_release",
    "is_export", "open_export", "read_export_meta", "resolve_compute_type", "sha256", "source_token",
]
