"""Typed configuration fields, and the configuration of `mtmeta prepare`.

The ground floor of the configuration: `opt` declares a field with its
help text and range (read by the command-line generator, mtmeta/cli.py,
and by `check_fields`, which every config's `validate` calls), and
`check_fields` checks every field's type and range. The model, training,
adaptation and comparison configs (mtmeta/config.py) are built from the
same pieces; `PrepareConfig` lives here, with the data it describes.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, get_args, get_origin, get_type_hints

from mtmeta.errors import ConfigError

from .corpus import ROLES

LANG_RE = re.compile(r"^[a-z]{2,3}$")


def opt(default: Any = MISSING, help: str = "", *, factory=None, min=None, max=None, gt=None, choices=None,
        flag: str | None = None, nargs=None, metavar=None, cli: bool = True):
    """A config field: its default (or `factory`), help text, range
    (`min` <= value <= `max`, `gt` < value) or `choices`, and how the
    command line shows it (`flag`: its own flag name instead of
    --field-name; `nargs`, `metavar`; `cli=False`: set in YAML only)."""
    meta = {"help": help, "cli": cli}
    for key, value in (("min", min), ("max", max), ("gt", gt), ("choices", choices), ("flag", flag), ("nargs", nargs), ("metavar", metavar)):
        if value is not None:
            meta[key] = tuple(value) if key == "choices" else value
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def check_lang(code: str, what: str = "language") -> str:
    if not isinstance(code, str) or not LANG_RE.match(code):
        raise ConfigError(f"{what} {code!r} is not a language code (expected 2-3 lowercase letters, e.g. 'ro')")
    return code


def _type_ok(tp, value) -> bool:
    if dataclasses.is_dataclass(tp):
        return dataclasses.is_dataclass(value)
    origin = get_origin(tp)
    if origin is list:
        (item,) = get_args(tp)
        return isinstance(value, list) and all(_type_ok(item, v) for v in value)
    if origin is dict:
        k, v = get_args(tp)
        return isinstance(value, dict) and all(_type_ok(k, a) and _type_ok(v, b) for a, b in value.items())
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    return True


def type_name(tp) -> str:
    origin = get_origin(tp)
    if origin is list:
        return f"a list of {type_name(get_args(tp)[0])}"
    if origin is dict:
        k, v = get_args(tp)
        return f"a mapping of {type_name(k)} to {type_name(v)}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, getattr(tp, "__name__", str(tp)))


def check_fields(cfg, where: str) -> None:
    """Every field of dataclass `cfg`: the declared type, and the range or
    choices its metadata gives (one ConfigError naming the field)."""
    hints = get_type_hints(type(cfg))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        name = f"{where}.{f.name}" if where else f.name
        tp = hints[f.name]
        if not _type_ok(tp, value):
            raise ConfigError(f"{name} must be {type_name(tp)}, got {value!r}")
        m = f.metadata
        items = value if get_origin(tp) is list else [value]
        for v in items:
            if "choices" in m and v not in m["choices"]:
                raise ConfigError(f"{name} {v!r} unknown ({', '.join(map(str, m['choices']))})")
            if "min" in m and v < m["min"]:
                raise ConfigError(f"{name} must be >= {m['min']}, got {v!r}")
            if "max" in m and v > m["max"]:
                raise ConfigError(f"{name} must be <= {m['max']}, got {v!r}")
            if "gt" in m and not v > m["gt"]:
                raise ConfigError(f"{name} must be > {m['gt']}, got {v!r}")


@dataclass
class SourceSpec:
    """One input corpus for `mtmeta prepare`."""

    type: str = opt("pack", "pack | files | hf | sacrebleu", choices=("pack", "files", "hf", "sacrebleu"))
    path: str = opt("", "pack folder, HF dataset name or saved folder, sacrebleu test set, or the source-side file")
    lang: str = opt("", "source language (files / hf / sacrebleu)")
    role: str = opt("meta-train", "what the text is for", choices=ROLES)
    name: str = opt("", "a name for the set (default: from the path)")
    tgt_path: str = opt("", "files: the English side")
    split: str = opt("train", "hf: dataset split")
    config_name: str = opt("", "hf: dataset configuration")
    src_column: str = opt("", "hf: source column (default: a `translation` column)")
    tgt_column: str = opt("", "hf: English column")
    langs: list[str] = opt(help="pack: only these languages", factory=list)

    def validate(self) -> None:
        check_fields(self, f"source {self.path}" if self.path else "source")
        if not self.path:
            raise ConfigError(f"source of type {self.type!r} needs a path")
        if self.type != "pack":
            check_lang(self.lang, f"source {self.path}: lang")
        if self.type == "files" and not self.tgt_path:
            raise ConfigError(f"source {self.path}: type 'files' needs tgt_path (the English side)")
        for lang in self.langs:
            check_lang(lang, f"source {self.path}: langs entry")


@dataclass
class PrepareConfig:
    sources: list[SourceSpec] = opt(
        help="input corpora (--pack DIR, or --source type=...,path=...,lang=..,role=..)",
        factory=lambda: [SourceSpec(type="pack", path="../shared/corpus")], cli=False,
    )
    output: str = opt("work/prepared", "prepared folder to write")
    train_langs: list[str] = opt(help="meta-train languages (empty: every one found)", factory=list)
    target_langs: list[str] = opt(help="target languages (empty: every language with an adapt set)", factory=list)
    vocab_mode: str = opt("per_language", "one source vocabulary per language, or one joint one", choices=("per_language", "joint"))
    src_vocab_size: int = opt(4000, "pieces per source-language vocabulary", min=8)
    joint_vocab_size: int = opt(16000, "pieces of the joint source vocabulary", min=8)
    tgt_vocab_size: int = opt(8000, "pieces of the English vocabulary", min=8)
    max_len_tokens: int = opt(200, "whitespace words; longer pairs are dropped", min=8)
    max_len_ratio: float = opt(4.0, "char-length ratio between the sides above which a pair is dropped", gt=1)
    ratio_min_chars: int = opt(12, "the ratio filter only applies when both sides are at least this long", min=0)
    valid_per_lang: int = opt(100, "pairs held out from each training language for validation", min=0)
    max_pairs_per_lang: int = opt(0, "cap on pairs per language (0: all; >0 for quick runs)", min=0)
    # Universal lexical representation: monolingual vectors aligned to English.
    ulr_vectors: bool = opt(False, "build aligned vectors for the universal lexical representation (model.embedding: ulr)")
    vector_dim: int = opt(100, "ULR vector dimension", min=2)
    vector_epochs: int = opt(5, "ULR: fastText epochs", min=1)
    vector_max_sentences: int = opt(50000, "ULR: sentences per language for vector training", min=1)
    num_universal: int = opt(2000, "ULR universal tokens = most frequent English pieces (paper: 20,000)", min=1)
    vector_files: dict[str, str] = opt(help="your own fastText .vec for a language (or en)", factory=dict,
                                       flag="--vectors", metavar="LANG=FILE.vec")
    mono_files: dict[str, list[str]] = opt(help="extra monolingual text for a language's vectors", factory=dict,
                                           flag="--mono", metavar="LANG=FILE")
    # ULR alignment seeds: bilingual dictionaries X->English ('source english' word pairs per line).
    dictionaries: dict[str, str] = opt(help="ULR: a LANG->English dictionary ('source english' pairs) to seed the alignment",
                                       factory=dict, flag="--dictionary", metavar="LANG=FILE")
    dictionary_dir: str = opt("", "ULR dictionaries folder ('': the pack's ../dictionaries/muse when present; 'none': no default)")
    dictionary_seeds: str = opt("dictionary", "Procrustes seeds with a dictionary", choices=("dictionary", "induced", "both"))
    dictionary_projection: int = opt(0, "ULR: times each dictionary pair joins the parallel text as a one-word sentence pair "
                                        "in the co-occurrence part of the queries (0: off; adapt uses 3)", min=0)
    seed: int = opt(1, "random seed (vocabularies, validation split, vectors)")

    def validate(self) -> None:
        check_fields(self, "prepare")
        for s in self.sources:
            s.validate()
        if not self.sources:
            raise ConfigError("prepare needs at least one source")
        for lang in self.train_langs + self.target_langs:
            check_lang(lang)
        for lang in list(self.vector_files) + list(self.mono_files):
            if lang != "en":
                check_lang(lang, "vector_files/mono_files key")
        for lang in self.dictionaries:
            check_lang(lang, "dictionaries key")
