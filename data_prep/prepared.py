"""The prepared-data format: what `mtmeta prepare` writes and every later
stage reads.

    summary.json             settings, fingerprint, languages, counts
    vocab/en.model           English sentencepiece model
    vocab/<lang>.model       one per source language (or vocab/src.model, joint)
    data/<lang>-en/<split>.npz   token ids of train / valid pairs (save_pairs)

The .npz writer and the readers of the summary and the vocabularies live
here, below both the pipeline that writes the folder (prepare.py) and the
training code that reads it (mtmeta/).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mtmeta.errors import DataError

from .vocab import Vocab

SUMMARY = "summary.json"


def save_pairs(path: str | Path, src: list[list[int]], tgt: list[list[int]]) -> None:
    """One split as concatenated int32 ids plus lengths (read by mtmeta.data.PairData.load)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        src=np.fromiter((i for s in src for i in s), dtype=np.int32),
        src_len=np.array([len(s) for s in src], dtype=np.int32),
        tgt=np.fromiter((i for t in tgt for i in t), dtype=np.int32),
        tgt_len=np.array([len(t) for t in tgt], dtype=np.int32),
    )
    tmp.replace(path)


def load_summary(folder: str | Path) -> dict:
    path = Path(folder) / SUMMARY
    if not path.is_file():
        raise DataError(f"{folder}: not a prepared folder (no {SUMMARY}); run `mtmeta prepare` first")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: corrupt summary ({e}); re-run `mtmeta prepare`") from None
    if not isinstance(summary, dict) or "fingerprint" not in summary or "train_langs" not in summary:
        raise DataError(f"{path}: not an mtmeta prepare summary; re-run `mtmeta prepare` into an empty folder")
    missing = _missing_parts(Path(folder), summary)
    if missing:
        raise DataError(f"{folder}: incomplete prepared folder (missing {missing[0]}); re-run `mtmeta prepare`")
    return summary


def _missing_parts(folder: Path, summary: dict) -> list[str]:
    """What a complete prepared folder must hold but this one lacks."""
    need = [folder / "vocab" / "en.model"]
    for lang in summary.get("train_langs", []):
        need += [folder / "data" / f"{lang}-en" / f"{split}.npz" for split in ("train", "valid")]
    return [str(p.relative_to(folder)) for p in need if not p.is_file()]


def load_pairs(path: str | Path) -> tuple[list[list[int]], list[list[int]]]:
    """The (source, target) id lists of one split written by save_pairs."""
    with np.load(path) as z:
        src, src_len, tgt, tgt_len = (z[k] for k in ("src", "src_len", "tgt", "tgt_len"))
    cut = lambda ids, lens: [a.tolist() for a in np.split(ids, np.cumsum(lens)[:-1])] if len(lens) else []  # noqa: E731
    return cut(src, src_len), cut(tgt, tgt_len)


def load_prepared_vocabs_unchecked(data_dir: str | Path, langs: list[str], joint: bool | None = None) -> tuple[Vocab, dict[str, Vocab], bool]:
    """The vocabularies of a folder being written (no summary yet): joint when vocab/src.model exists."""
    data_dir = Path(data_dir)
    joint = (data_dir / "vocab" / "src.model").is_file() if joint is None else joint
    en = Vocab.load(data_dir / "vocab" / "en.model", "en")
    if joint:
        return en, {"src": Vocab.load(data_dir / "vocab" / "src.model", "src")}, True
    return en, {lang: Vocab.load(data_dir / "vocab" / f"{lang}.model", lang) for lang in langs}, False


def load_prepared_vocabs(data_dir: str | Path, langs: list[str]) -> tuple[Vocab, dict[str, Vocab], bool]:
    """English vocabulary, source vocabularies by table name, and whether
    the folder uses one joint source vocabulary."""
    summary = load_summary(data_dir)
    return load_prepared_vocabs_unchecked(data_dir, langs, joint=summary["vocab_mode"] == "joint")
