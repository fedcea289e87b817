"""Loaders that turn corpus files and datasets into `ParallelText` records.

Four sources, all X->English: the offline corpus pack (`load_pack`), a pair
of plain files, a Hugging Face dataset (hub, local files or `save_to_disk`),
and a sacrebleu test set. Text is returned exactly as stored, minus the line
terminator; normalisation and filtering belong to `data_prep.cleaning`.
Every problem is a one-line `DataError` naming the file or dataset.
"""
from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .config import LANG_RE
from mtmeta.errors import DataError
from mtmeta.safe_io import read_text_lines

from .corpus import ROLES, TARGET_LANG, ParallelText

MANIFEST = "MANIFEST.tsv"
_MANIFEST_COLUMNS = ("pair", "role", "name", "lines", "origin", "license")


# ---------------------------------------------------------------- helpers


def check_lang(lang: str, where: str = "") -> str:
    if not isinstance(lang, str) or not LANG_RE.match(lang):
        at = f" in {where}" if where else ""
        raise DataError(f"bad language code {lang!r}{at}: expected 2-3 lowercase letters (ISO 639)")
    if lang == TARGET_LANG:
        # en-en would make the target side ambiguous in every loader below.
        raise DataError(f"source language cannot be {TARGET_LANG!r}{' in ' + where if where else ''}")
    return lang


def check_role(role: str, where: str = "") -> str:
    if role not in ROLES:
        at = f" in {where}" if where else ""
        raise DataError(f"unknown role {role!r}{at}: expected one of {', '.join(ROLES)}")
    return role


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    """Strict UTF-8 lines with only the line terminator removed: the one
    reader of text (mtmeta.safe_io.read_text_lines, shared with adapt and
    translate). Splits on "\\n" alone: str.splitlines() would also break on
    U+2028, U+0085 etc. inside a sentence and silently misalign the two
    sides. A CR-only file is split on CR and NUL characters are removed,
    each said on stderr."""
    return read_text_lines(path)


def check_aligned(src: list[str], tgt: list[str], src_name: str, tgt_name: str) -> None:
    if len(src) != len(tgt):
        raise DataError(f"{src_name} has {len(src)} lines but {tgt_name} has {len(tgt)}")
    if not src:
        raise DataError(f"{src_name} and {tgt_name} are empty (0 lines)")


# ---------------------------------------------------------------- plain files


def load_plain_files(
    src_path: str | os.PathLike[str],
    tgt_path: str | os.PathLike[str],
    lang: str,
    role: str,
    name: str | None = None,
) -> ParallelText:
    """Two line-aligned UTF-8 files; `name` defaults to the source file stem."""
    src_p, tgt_p = Path(src_path), Path(tgt_path)
    check_lang(lang, str(src_p))
    check_role(role, str(src_p))
    for p in (src_p, tgt_p):
        if not p.is_file():
            raise DataError(f"{p}: file not found")
    src, tgt = read_lines(src_p), read_lines(tgt_p)
    check_aligned(src, tgt, str(src_p), str(tgt_p))
    return ParallelText(
        lang=lang,
        role=role,
        name=name or src_p.stem,
        src=src,
        tgt=tgt,
        origin=str(src_p),
        meta={"src_path": str(src_p), "tgt_path": str(tgt_p)},
    )


# ---------------------------------------------------------------- corpus pack


def _read_manifest(root: Path) -> list[dict[str, str]]:
    path = root / MANIFEST
    rows = read_lines(path)
    header = rows[0].split("\t")
    missing = [c for c in _MANIFEST_COLUMNS[:4] if c not in header]
    if missing:
        raise DataError(f"{path} line 1: header lacks column(s) {', '.join(missing)} (has {', '.join(header)})")
    out: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for i, line in enumerate(rows[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise DataError(f"{path} line {i}: {len(cells)} columns, header has {len(header)}")
        row = dict(zip(header, cells))
        where = f"{path} line {i}"
        lang, _, tgt = row["pair"].partition("-")
        if tgt != TARGET_LANG:
            raise DataError(f"{where}: pair {row['pair']!r} is not <xx>-{TARGET_LANG}")
        check_lang(lang, where)
        check_role(row["role"], where)
        if not row["lines"].isdigit():
            raise DataError(f"{where}: lines {row['lines']!r} is not a number")
        if (lang, row["name"]) in seen:
            raise DataError(f"{where}: {row['pair']}/{row['name']} is listed twice")
        seen.add((lang, row["name"]))
        out.append({**row, "lang": lang})
    return out


def _scan_pack(root: Path, default_role: str) -> list[dict[str, str]]:
    """Without a MANIFEST: every <xx>-en/<name>.<xx> / <name>.en pair."""
    out: list[dict[str, str]] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name.endswith(f"-{TARGET_LANG}")):
        lang = d.name[: -len(TARGET_LANG) - 1]
        check_lang(lang, str(d))
        names: set[str] = set()
        for f in d.iterdir():
            stem, dot, ext = f.name.rpartition(".")
            if f.is_file() and dot and ext in (lang, TARGET_LANG):
                names.add(stem)
        # A name with only one side present is reported by _load_pack_entry.
        out += [{"lang": lang, "pair": d.name, "name": n, "role": default_role} for n in sorted(names)]
    return out


def load_pack(
    root: str | os.PathLike[str],
    langs: Iterable[str] | None = None,
    roles: Iterable[str] | None = None,
    default_role: str = "meta-train",
) -> list[ParallelText]:
    """Load a corpus pack (`<xx>-en/<name>.<xx>` + `<name>.en`), sorted by (lang, name).

    With `root/MANIFEST.tsv` the manifest is authoritative: it gives the roles,
    its `lines` column is checked, and files it does not list are ignored.
    Without one, every pair found gets `default_role`.
    """
    root_p = Path(root)
    if not root_p.is_dir():
        raise DataError(f"corpus pack {root_p}: no such directory")
    check_role(default_role)
    want_langs = None if langs is None else {check_lang(lg) for lg in langs}
    want_roles = None if roles is None else {check_role(r) for r in roles}

    has_manifest = (root_p / MANIFEST).is_file()
    entries = _read_manifest(root_p) if has_manifest else _scan_pack(root_p, default_role)
    if want_langs:
        absent = sorted(want_langs - {e["lang"] for e in entries})
        if absent:
            have = sorted({e["lang"] for e in entries})
            raise DataError(f"corpus pack {root_p} has no {', '.join(absent)} (has {', '.join(have) or 'nothing'})")

    texts = []
    for e in sorted(entries, key=lambda e: (e["lang"], e["name"])):
        if (want_langs is not None and e["lang"] not in want_langs) or (
            want_roles is not None and e["role"] not in want_roles
        ):
            continue  # filter before reading: the full pack is ~400K lines
        texts.append(_load_pack_entry(root_p, e, check_count=has_manifest))
    return texts


def _load_pack_entry(root: Path, e: dict[str, str], check_count: bool) -> ParallelText:
    lang, name = e["lang"], e["name"]
    src_p = root / e["pair"] / f"{name}.{lang}"
    tgt_p = root / e["pair"] / f"{name}.{TARGET_LANG}"
    for p, other in ((src_p, tgt_p), (tgt_p, src_p)):
        if not p.is_file():
            why = "listed in MANIFEST.tsv but missing" if check_count else f"missing (its other side {other.name} exists)"
            raise DataError(f"{p}: {why}")
    text = load_plain_files(src_p, tgt_p, lang, e["role"], name=name)
    if check_count and len(text) != int(e["lines"]):
        raise DataError(f"{src_p} has {len(text)} lines but {MANIFEST} says {e['lines']}")
    text.meta.update({k: e[k] for k in ("origin", "license") if e.get(k)})
    return text


# ---------------------------------------------------------------- Hugging Face


def _is_saved_to_disk(p: Path) -> bool:
    # Markers written by Dataset.save_to_disk / DatasetDict.save_to_disk.
    return p.is_dir() and ((p / "state.json").is_file() or (p / "dataset_dict.json").is_file())


def _pick_columns(
    columns: list[str], lang: str, src_column: str | None, tgt_column: str | None, label: str
) -> tuple[str, str]:
    src_col = src_column or (lang if lang in columns else None)
    tgt_col = tgt_column or (TARGET_LANG if TARGET_LANG in columns else None)
    # FLORES-style schema: sentence_<lang>_<Script> columns, English is eng_*.
    sent = [c for c in columns if c.startswith("sentence_")]
    eng = [c for c in sent if c.startswith("sentence_eng")]
    if tgt_col is None and len(eng) == 1:
        tgt_col = eng[0]
    if src_col is None and len(eng) == 1 and len(sent) == 2:
        src_col = next(c for c in sent if c != eng[0])
    for want, col in (("source", src_col), ("target", tgt_col)):
        if col is None or col not in columns:
            hint = f"column {col!r}" if col else f"a {lang!r} column" if want == "source" else "an 'en' column"
            raise DataError(
                f"{label}: no {want} column (looked for {hint}); available columns: {', '.join(columns)}"
                " (pass src_column/tgt_column)"
            )
    assert src_col is not None and tgt_col is not None
    return src_col, tgt_col


def _as_str_list(values: list[Any], label: str, what: str) -> list[str]:
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise DataError(f"{label}: {what} of row {i} is {type(v).__name__}, not text")
    return values


def load_hf_dataset(
    path_or_name: str | os.PathLike[str],
    lang: str,
    role: str,
    name: str | None = None,
    split: str = "train",
    config_name: str | None = None,
    src_column: str | None = None,
    tgt_column: str | None = None,
) -> ParallelText:
    """A Hugging Face dataset: a `save_to_disk` folder, or anything `load_dataset` accepts."""
    import datasets  # heavy import, only when this loader is used

    check_lang(lang, str(path_or_name))
    check_role(role, str(path_or_name))
    local = Path(path_or_name)
    label = f"{path_or_name}" + (f" ({config_name})" if config_name else "") + f" split {split!r}"
    if _is_saved_to_disk(local):
        ds: Any = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{local}: no split {split!r}; available splits: {', '.join(ds)}")
            ds = ds[split]
    else:
        try:
            ds = datasets.load_dataset(str(path_or_name), config_name, split=split)
        except Exception as exc:  # hub, network and format errors alike: report, don't trace
            first = (str(exc).strip().splitlines() or [""])[0]
            raise DataError(f"cannot load Hugging Face dataset {label}: {type(exc).__name__}: {first}") from None
    columns = list(ds.column_names)
    if len(ds) == 0:
        raise DataError(f"{label}: dataset is empty (0 rows)")

    if "translation" in columns and src_column is None and tgt_column is None:
        rows = ds["translation"]
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or lang not in row or TARGET_LANG not in row:
                keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
                raise DataError(f"{label}: translation row {i} lacks {lang!r} or {TARGET_LANG!r} (has {keys})")
        src = _as_str_list([r[lang] for r in rows], label, f"translation[{lang!r}]")
        tgt = _as_str_list([r[TARGET_LANG] for r in rows], label, f"translation[{TARGET_LANG!r}]")
        cols = {"src_column": f"translation.{lang}", "tgt_column": f"translation.{TARGET_LANG}"}
    else:
        src_col, tgt_col = _pick_columns(columns, lang, src_column, tgt_column, label)
        src = _as_str_list(list(ds[src_col]), label, f"column {src_col!r}")
        tgt = _as_str_list(list(ds[tgt_col]), label, f"column {tgt_col!r}")
        cols = {"src_column": src_col, "tgt_column": tgt_col}

    default_name = local.name if _is_saved_to_disk(local) else str(path_or_name).rstrip("/").split("/")[-1]
    return ParallelText(
        lang=lang,
        role=role,
        name=name or default_name,
        src=src,
        tgt=tgt,
        origin=str(path_or_name),
        meta={"split": split, "config_name": config_name, **cols},
    )


# ---------------------------------------------------------------- sacrebleu


def _sacrebleu_dataset(testset: str) -> Any:
    from sacrebleu.dataset import DATASETS

    if testset not in DATASETS:
        raise DataError(f"unknown sacrebleu test set {testset!r}; available: {', '.join(sorted(DATASETS))}")
    ds = DATASETS[testset]
    # sacrebleu reads $SACREBLEU once, at import, into each dataset's _outdir.
    # Honour a value set later (CLI option, tests) without touching its globals.
    cache = os.environ.get("SACREBLEU")
    if cache and hasattr(ds, "_outdir"):
        outdir = os.path.join(cache, ds.name)
        if ds._outdir != outdir:
            ds = copy.copy(ds)
            ds._outdir, ds._rawdir = outdir, os.path.join(outdir, "raw")
    return ds


def load_sacrebleu(testset: str, lang: str, role: str = "test", name: str | None = None) -> ParallelText:
    """A sacrebleu test set, e.g. ("wmt16", "ro") for ro-en.

    Downloads into sacrebleu's cache ($SACREBLEU, default ~/.sacrebleu) when
    online; offline it needs the processed files already there. With several
    references the first is the target; the count is kept in meta.
    """
    check_lang(lang, f"sacrebleu {testset}")
    check_role(role, f"sacrebleu {testset}")
    ds = _sacrebleu_dataset(testset)
    langpair = f"{lang}-{TARGET_LANG}"
    if langpair not in ds.langpairs:
        to_en = sorted(p for p in ds.langpairs if p.endswith(f"-{TARGET_LANG}"))
        raise DataError(
            f"sacrebleu test set {testset!r} has no {langpair}; its X-{TARGET_LANG} pairs: {', '.join(to_en) or 'none'}"
        )
    try:
        src_file = ds.get_source_file(langpair)
        ref_files = ds.get_reference_files(langpair)
    except (Exception, SystemExit) as exc:  # sacrebleu calls sys.exit on SSL/MD5 errors
        first = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(
            f"sacrebleu {testset} {langpair}: cannot download or process ({type(exc).__name__}: {first});"
            f" offline, put the processed files in {ds._outdir}"
        ) from None
    if not ref_files:
        raise DataError(f"sacrebleu {testset} {langpair}: no reference files")
    src, tgt = read_lines(src_file), read_lines(ref_files[0])
    check_aligned(src, tgt, src_file, ref_files[0])
    return ParallelText(
        lang=lang,
        role=role,
        name=name or testset,
        src=src,
        tgt=tgt,
        origin=f"sacrebleu:{testset}/{langpair}",
        meta={"src_path": src_file, "tgt_path": ref_files[0], "n_refs": len(ref_files)},
    )
