"""Cleaning and decontamination of parallel text.

Every step counts what it removed so `mtmeta prepare` can print and save it.
Protected texts (adapt / valid / test) are never filtered, only normalised:
their line count must match what the papers report.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from .corpus import TRAIN_ROLES, ParallelText

# C0/C1 control characters other than tab/newline, plus zero-width marks
# that break tokenisation without changing what a reader sees.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\ufeff]")


def normalize(text: str) -> str:
    """NFKC, control characters removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL_RE.sub("", text)
    return " ".join(text.split())


def match_key(text: str) -> str:
    """What decontamination compares: whitespace-normalised text. Applied to
    already `normalize`d text, so NFKC variants match as well."""
    return " ".join(text.split())


@dataclass
class CleaningRules:
    max_len_tokens: int = 200
    max_len_ratio: float = 4.0
    ratio_min_chars: int = 12


def clean_train_text(
    text: ParallelText,
    rules: CleaningRules,
    counts: Counter,
    src_keys: set[str] = frozenset(),
    en_keys: set[str] = frozenset(),
) -> ParallelText:
    """Normalise, decontaminate, then filter one training text. Contamination
    is checked first so its count is exact whatever the filters would have
    dropped anyway; duplicates are removed later, across a language's files."""
    src_out, tgt_out = [], []
    for s, t in zip(text.src, text.tgt):
        s, t = normalize(s), normalize(t)
        if t and match_key(t) in en_keys:
            counts["contaminated_en"] += 1
            continue
        if s and match_key(s) in src_keys:
            counts["contaminated_src"] += 1
            continue
        if not s or not t:
            counts["empty"] += 1
            continue
        if len(s.split()) > rules.max_len_tokens or len(t.split()) > rules.max_len_tokens:
            counts["too_long"] += 1
            continue
        short, long_ = sorted((len(s), len(t)))
        if short >= rules.ratio_min_chars and long_ / short > rules.max_len_ratio:
            counts["length_ratio"] += 1
            continue
        if long_ >= rules.ratio_min_chars and short < 2:
            counts["length_ratio"] += 1
            continue
        src_out.append(s)
        tgt_out.append(t)
    return ParallelText(text.lang, text.role, text.name, src_out, tgt_out, text.origin, dict(text.meta))


def normalize_protected(text: ParallelText) -> ParallelText:
    """Protected sets keep every line; only the source side is normalised
    (references stay byte-identical for scoring)."""
    return ParallelText(
        text.lang, text.role, text.name, [normalize(s) for s in text.src], list(text.tgt), text.origin, dict(text.meta)
    )


def drop_empty_pairs(text: ParallelText, notify=None) -> ParallelText:
    """Pairs whose source or English side is empty (after `normalize` of the
    source), dropped and said (stderr by default), as prepare drops them from
    training text: for adaptation sets read from the user's own files, where
    an empty pair would be trained on. An empty result is a DataError."""
    from mtmeta.errors import DataError
    from mtmeta.safe_io import notify_stderr

    empty = [i for i, (s, t) in enumerate(zip(text.src, text.tgt)) if not s.strip() or not t.strip()]
    if not empty:
        return text
    where = text.meta.get("src_path", text.name)
    if len(empty) == len(text):
        raise DataError(f"{where}: every line pair has an empty side; nothing to adapt on")
    shown = ", ".join(str(i + 1) for i in empty[:5]) + (", ..." if len(empty) > 5 else "")
    (notify or notify_stderr)(f"{where}: dropped {len(empty)} line pair(s) with an empty side (line {shown}); {len(text) - len(empty)} left")
    keep = set(range(len(text))) - set(empty)
    return ParallelText(
        text.lang, text.role, text.name, [s for i, s in enumerate(text.src) if i in keep],
        [t for i, t in enumerate(text.tgt) if i in keep], text.origin, dict(text.meta),
    )


def protected_keys(texts: list[ParallelText]) -> tuple[set[str], set[str]]:
    """Source and English sentences (normalised keys) that training must never see."""
    src_keys, en_keys = set(), set()
    for text in texts:
        if text.role in TRAIN_ROLES:
            continue
        src_keys.update(match_key(normalize(s)) for s in text.src)
        en_keys.update(match_key(normalize(t)) for t in text.tgt)
    src_keys.discard("")
    en_keys.discard("")
    return src_keys, en_keys


def dedup_and_decontaminate(
    src: list[str], tgt: list[str], src_keys: set[str], en_keys: set[str], counts: Counter
) -> tuple[list[str], list[str]]:
    """Drop pairs whose source or English side occurs in a protected set,
    then exact duplicate pairs (first occurrence kept)."""
    seen: set[tuple[str, str]] = set()
    out_s, out_t = [], []
    for s, t in zip(src, tgt):
        if match_key(t) in en_keys:
            counts["contaminated_en"] += 1
            continue
        if match_key(s) in src_keys:
            counts["contaminated_src"] += 1
            continue
        if (s, t) in seen:
            counts["duplicate"] += 1
            continue
        seen.add((s, t))
        out_s.append(s)
        out_t.append(t)
    return out_s, out_t
