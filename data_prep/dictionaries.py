"""Bilingual dictionaries X→English (e.g. MUSE's) for aligning ULR vectors.

A dictionary file holds one `source english` pair per line, the two words
separated by any whitespace (MUSE uses a tab for most languages and a single
space for de, es, fr, it and ru). A source word may have several lines
(several translations). Words are compared lower-cased.

Dictionaries list words, while ULR queries and keys are sentencepiece
pieces: `word_vectors` gives a word the mean of its pieces' vectors under the
language's segmentation, so a word pair constrains the pieces of both words
(see vectors.align_language).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mtmeta.errors import DataError

from .vocab import N_SPECIAL


def read_dictionary(path: str | Path) -> list[tuple[str, str]]:
    """(source, english) pairs, lower-cased, duplicates dropped, file order
    kept. Lines without exactly two fields (blank, a multi-word entry) are
    skipped; a file with no pair at all is an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: dictionary file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: dictionary is not UTF-8 ({e.reason})") from None
    seen: set[tuple[str, str]] = set()
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        pair = (parts[0].lower(), parts[1].lower())
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    if not pairs:
        raise DataError(f"{path}: no 'source english' word pairs in the dictionary")
    return pairs


def default_dictionary(pack: str | Path, lang: str) -> str:
    """The pack's MUSE training split for `lang`, beside the corpus:
    <pack>/../dictionaries/muse/<lang>-en.0-5000.txt; '' when absent."""
    path = Path(pack).resolve().parent / "dictionaries" / "muse" / f"{lang}-en.0-5000.txt"
    return str(path) if path.is_file() else ""


def group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """source word -> its English translations, in file order."""
    out: dict[str, list[str]] = {}
    for s, e in pairs:
        out.setdefault(s, []).append(e)
    return out


def segment(vocab, words: list[str]) -> list[list[int]]:
    """Each word's pieces under `vocab`, as the word would be segmented in a
    sentence (with the word-start marker); unknown-only words give []."""
    if not words:
        return []
    return [[i for i in ids if i >= N_SPECIAL] for ids in vocab.encode_batch(words)]


def word_vectors(piece_vectors: np.ndarray, segmentations: list[list[int]]) -> np.ndarray:
    """Mean of each word's piece vectors, unit length (zero for a word with
    no known piece)."""
    out = np.zeros((len(segmentations), piece_vectors.shape[1]), dtype=np.float32)
    for j, ids in enumerate(segmentations):
        if ids:
            out[j] = piece_vectors[ids].mean(0)
    n = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(n, 1e-8)


def adapt_dictionary(path: str, data: str | Path, lang: str) -> list[tuple[str, str]] | None:
    """The dictionary `mtmeta adapt` seeds a new language's alignment with:
    `path`; '' = the MUSE file beside the pack the prepared folder `data` was
    made from, or beside `data` itself when it is a corpus pack (when there
    is one); 'none' = no dictionary (induced seeds)."""
    if path == "none":
        return None
    if path:
        return read_dictionary(path)
    import json

    if (Path(data) / "MANIFEST.tsv").is_file() and not (Path(data) / "summary.json").is_file():  # a pack, not prepared
        found = default_dictionary(data, lang)
        return read_dictionary(found) if found else None
    try:
        summary = json.loads((Path(data) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cfg = summary.get("config") or {}
    if cfg.get("dictionary_dir") == "none":
        return None
    if cfg.get("dictionary_dir"):
        guess = Path(cfg["dictionary_dir"]) / f"{lang}-en.0-5000.txt"
        return read_dictionary(guess) if guess.is_file() else None
    for src in cfg.get("sources", []):
        if src.get("type") == "pack":
            found = default_dictionary(src.get("path", ""), lang)
            if found:
                return read_dictionary(found)
    return None
