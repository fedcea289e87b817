"""`mtmeta prepare`: corpora in; clean, tokenised, decontaminated tasks out.

Output folder layout:

    summary.json                 counts per step and language, vocabularies, fingerprint
    vocab/en.model               English target vocabulary (sentencepiece)
    vocab/<xx>.model             per-language source vocabulary (or vocab/src.model, joint mode)
    data/<xx>-en/{train,valid}.npz   binarised training pairs per language
    text/<xx>-en/<role>/<name>.{xx,en}  protected sets (adapt, valid, test): source normalised, reference verbatim

The folder is written under a temporary name (`<output>.partial`, marked by
PARTIAL_MARKER) and swapped in by renames when complete, so an interrupted run
never leaves a folder that looks finished. prepare only ever deletes folders
that carry this project's own marker (a prepared folder's summary.json, or the
partial marker): pointing --output at anything else is refused, not emptied.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path

from mtmeta.errors import ConfigError, DataError

from . import sources
from .config import PrepareConfig, SourceSpec
from .prepared import SUMMARY, load_pairs, load_prepared_vocabs_unchecked, load_summary, save_pairs  # noqa: F401 (load_summary: read by callers of this module)
from .cleaning import (
    CleaningRules,
    clean_train_text,
    dedup_and_decontaminate,
    match_key,
    normalize,
    normalize_protected,
    protected_keys,
)
from .corpus import TARGET_LANG, TRAIN_ROLES, ParallelText
from .vocab import train_vocab

PARTIAL_MARKER = ".mtmeta-prepare-partial"
FORMAT_VERSION = 5


def load_sources(specs: list[SourceSpec]) -> list[ParallelText]:
    texts: list[ParallelText] = []
    for spec in specs:
        if spec.type == "pack":
            texts += sources.load_pack(spec.path, langs=spec.langs or None)
        elif spec.type == "files":
            texts.append(sources.load_plain_files(spec.path, spec.tgt_path, spec.lang, spec.role, spec.name or None))
        elif spec.type == "hf":
            texts.append(
                sources.load_hf_dataset(
                    spec.path,
                    spec.lang,
                    spec.role,
                    name=spec.name or None,
                    split=spec.split,
                    config_name=spec.config_name or None,
                    src_column=spec.src_column or None,
                    tgt_column=spec.tgt_column or None,
                )
            )
        elif spec.type == "sacrebleu":
            texts.append(sources.load_sacrebleu(spec.path, spec.lang, role=spec.role, name=spec.name or None))
    return texts


# Settings added after folders were made with FORMAT_VERSION: at these
# values they change nothing, so they stay out of the fingerprint and a
# folder prepared before they existed is still reused.
LATE_DEFAULTS = {"dictionary_projection": 0}


def fingerprint(cfg: PrepareConfig, texts: list[ParallelText]) -> str:
    h = hashlib.sha256()
    settings = asdict(cfg)
    settings.pop("output")
    for key, value in LATE_DEFAULTS.items():
        if settings.get(key) == value:
            settings.pop(key)
    h.update(json.dumps([FORMAT_VERSION, settings], sort_keys=True).encode())
    for t in texts:
        h.update(f"{t.lang}\t{t.role}\t{t.name}\t{len(t)}\n".encode())
        for s, e in zip(t.src, t.tgt):
            h.update(s.encode())
            h.update(b"\t")
            h.update(e.encode())
            h.update(b"\n")
    return h.hexdigest()


def _is_ours(folder: Path) -> bool:
    """Whether `folder` was made by `mtmeta prepare` (complete or partial),
    judged by its marker: only such folders may be deleted or replaced."""
    if (folder / PARTIAL_MARKER).is_file():
        return True
    try:
        summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and "fingerprint" in summary and "format" in summary


def _check_replaceable(folder: Path, what: str) -> None:
    """Refuse (one line) to touch a folder that is not ours, unless it is empty or absent."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise DataError(f"{folder}: {what} exists and is not a folder; choose another --output")
    if any(folder.iterdir()) and not _is_ours(folder):
        raise DataError(
            f"{folder}: {what} is not empty and was not made by `mtmeta prepare` (no {SUMMARY} marker); "
            "refusing to replace it: choose a new or empty --output folder"
        )


def _check_output(out: Path, specs: list[SourceSpec]) -> None:
    """The output may not hold the inputs, the working directory or itself be a system root."""
    if out == out.parent or out == Path.home().resolve():
        raise DataError(f"{out}: refusing to write a prepared folder over this folder; choose a new --output folder")
    cwd = Path.cwd().resolve()
    if cwd == out or out in cwd.parents:
        raise DataError(f"{out}: the output folder contains the current directory; choose a new --output folder")
    for spec in specs:
        if spec.type in ("pack", "files") and spec.path:
            for p in (spec.path, spec.tgt_path):
                if not p:
                    continue
                src = Path(p).resolve()
                if src == out or out in src.parents:
                    raise DataError(f"{out}: the output folder contains the input {p}; choose another --output folder")


def prepare(cfg: PrepareConfig, log=print) -> dict:
    cfg.validate()
    started = time.time()
    out = Path(cfg.output).resolve()
    tmp, old = out.with_name(out.name + ".partial"), out.with_name(out.name + ".old")
    # Every check before any work: a refused output costs nothing and deletes nothing.
    _check_output(out, cfg.sources)
    for folder, what in ((out, "the output folder"), (tmp, "the partial folder"), (old, "the previous-output folder")):
        _check_replaceable(folder, what)
    log(f"loading {len(cfg.sources)} source(s)")
    texts = load_sources(cfg.sources)
    if not texts:
        raise DataError("the sources hold no parallel text")
    fp = fingerprint(cfg, texts)
    if (out / SUMMARY).is_file():
        try:
            previous = load_summary(out)  # only a complete folder is reused
        except DataError:
            previous = {}
        if previous.get("fingerprint") == fp:
            log(f"{out}: already prepared from the same inputs and settings; reusing it")
            return previous

    train_langs = cfg.train_langs or sorted({t.lang for t in texts if t.role in TRAIN_ROLES})
    target_langs = cfg.target_langs or sorted({t.lang for t in texts if t.role == "adapt"})
    have_train = {t.lang for t in texts if t.role in TRAIN_ROLES}
    missing = [lang for lang in train_langs if lang not in have_train]
    if missing:
        raise ConfigError(f"train_langs {missing} have no meta-train text in the sources")
    if not train_langs:
        raise DataError("no meta-train text in the sources")
    have_adapt = {t.lang for t in texts if t.role == "adapt"}
    missing = [lang for lang in target_langs if lang not in have_adapt]
    if missing:
        raise ConfigError(f"target_langs {missing} have no adapt set in the sources")

    protected = [t for t in texts if t.role not in TRAIN_ROLES]
    src_keys, en_keys = protected_keys(protected)
    raw_overlap = _raw_english_overlap(texts)
    log(
        f"{len(protected)} protected set(s) ({len(en_keys)} English sentences); meta-train English lines found in "
        f"adapt/valid/test: {raw_overlap['meta_train_en_lines_in_adapt_valid_test']}, "
        f"in any protected set (adapt-extra too): {raw_overlap['meta_train_en_lines_in_any_protected_set']}"
    )

    if tmp.exists():
        shutil.rmtree(tmp)  # ours: _check_replaceable said so
    tmp.mkdir(parents=True)
    (tmp / PARTIAL_MARKER).write_text("written by mtmeta prepare; incomplete until renamed\n", encoding="utf-8")

    rules = CleaningRules(cfg.max_len_tokens, cfg.max_len_ratio, cfg.ratio_min_chars)
    rng = random.Random(cfg.seed)
    counts: dict[str, dict] = {}
    train_text: dict[str, tuple[list[str], list[str]]] = {}
    valid_text: dict[str, tuple[list[str], list[str]]] = {}
    by_lang = defaultdict(list)
    for t in texts:
        if t.role in TRAIN_ROLES and t.lang in train_langs:
            by_lang[t.lang].append(t)
    for lang in train_langs:
        c: Counter = Counter()
        c["input"] = sum(len(t) for t in by_lang[lang])
        src, tgt = [], []
        for t in by_lang[lang]:
            cleaned = clean_train_text(t, rules, c, src_keys, en_keys)
            src += cleaned.src
            tgt += cleaned.tgt
        src, tgt = dedup_and_decontaminate(src, tgt, src_keys, en_keys, c)
        order = list(range(len(src)))
        rng.shuffle(order)
        if cfg.max_pairs_per_lang and len(order) > cfg.max_pairs_per_lang:
            c["capped"] = len(order) - cfg.max_pairs_per_lang
            order = order[: cfg.max_pairs_per_lang]
        n_valid = min(cfg.valid_per_lang, len(order) // 10)
        valid_idx, train_idx = order[:n_valid], order[n_valid:]
        train_text[lang] = ([src[i] for i in train_idx], [tgt[i] for i in train_idx])
        valid_text[lang] = ([src[i] for i in valid_idx], [tgt[i] for i in valid_idx])
        c["train"], c["valid"] = len(train_idx), len(valid_idx)
        counts[lang] = dict(c)
        log(
            f"  {lang}-en: {c['input']:>6} in -> {c['train']:>6} train + {c['valid']} valid "
            f"(empty {c['empty']}, long {c['too_long']}, ratio {c['length_ratio']}, "
            f"contaminated en {c['contaminated_en']} src {c['contaminated_src']}, dup {c['duplicate']})"
        )

    log("training sentencepiece vocabularies")
    en_vocab = train_vocab([t for lang in train_langs for t in train_text[lang][1]], TARGET_LANG, cfg.tgt_vocab_size, cfg.seed)
    (tmp / "vocab").mkdir()
    en_vocab.save(tmp / "vocab" / "en.model")
    src_vocabs = {}
    if cfg.vocab_mode == "joint":
        joint = train_vocab(
            [s for lang in train_langs for s in train_text[lang][0]], "src", cfg.joint_vocab_size, cfg.seed
        )
        joint.save(tmp / "vocab" / "src.model")
        src_vocabs = {lang: joint for lang in train_langs}
    else:
        for lang in train_langs:
            v = train_vocab(train_text[lang][0], lang, cfg.src_vocab_size, cfg.seed)
            v.save(tmp / "vocab" / f"{lang}.model")
            src_vocabs[lang] = v

    log("binarising")
    lang_info = {}
    train_ids: dict[str, tuple[list[list[int]], list[list[int]]]] = {}  # kept for the ULR vectors
    for lang in train_langs:
        for split, store in (("train", train_text), ("valid", valid_text)):
            s_ids = src_vocabs[lang].encode_batch(store[lang][0]) if store[lang][0] else []
            t_ids = en_vocab.encode_batch(store[lang][1]) if store[lang][1] else []
            save_pairs(tmp / "data" / f"{lang}-en" / f"{split}.npz", s_ids, t_ids)
            if split == "train":
                train_ids[lang] = (s_ids, t_ids)
                lang_info[lang] = {
                    "pairs": len(s_ids),
                    "src_tokens": sum(map(len, s_ids)),
                    "tgt_tokens": sum(map(len, t_ids)),
                    "src_vocab": len(src_vocabs[lang]),
                }

    ulr_report = None
    if cfg.ulr_vectors:
        log("ULR: training monolingual vectors and aligning each language to English")
        ulr_report = build_ulr_vectors(cfg, tmp, en_vocab, src_vocabs, train_ids, log)

    protected_info = []
    for t in protected:
        t = normalize_protected(t)
        folder = tmp / "text" / t.pair / t.role
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{t.name}.{t.lang}").write_text("\n".join(t.src) + "\n", encoding="utf-8")
        (folder / f"{t.name}.en").write_text("\n".join(t.tgt) + "\n", encoding="utf-8")
        protected_info.append({"lang": t.lang, "role": t.role, "name": t.name, "lines": len(t), "origin": t.origin})

    # An independent check of what was written, not of the filter that made it: the
    # training and validation data decoded back from the .npz files against the
    # protected sets read back from text/, source side and English side.
    verified = verify_no_overlap(tmp, train_langs)

    totals = Counter()
    for c in counts.values():
        totals.update(c)
    summary = {
        "format": FORMAT_VERSION,
        "fingerprint": fp,
        "config": asdict(cfg),
        "vocab_mode": cfg.vocab_mode,
        "train_langs": train_langs,
        "target_langs": target_langs,
        "tgt_vocab": len(en_vocab),
        "languages": lang_info,
        "counts": counts,
        "totals": dict(totals),
        "contamination": {
            **raw_overlap,
            "pairs_removed_english": totals["contaminated_en"],
            "pairs_removed_source": totals["contaminated_src"],
            "verified_no_overlap": verified,
        },
        "protected": protected_info,
        "ulr": ulr_report,
        "seconds": round(time.time() - started, 1),
    }
    (tmp / SUMMARY).write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    (tmp / PARTIAL_MARKER).unlink()
    _swap_in(tmp, out, old)
    log(
        f"prepared {len(train_langs)} training language(s), {totals['train']} training pairs; removed "
        f"{totals['contaminated_en'] + totals['contaminated_src']} contaminated and {totals['duplicate']} duplicate pairs "
        f"-> {out}"
    )
    return summary


def _swap_in(new: Path, out: Path, old: Path) -> None:
    """Replace `out` by `new` with renames only: a kill at any moment leaves
    either the previous complete folder, or none (and the next run rebuilds),
    never a half-deleted one that a later run could reuse."""
    if old.exists():
        shutil.rmtree(old)  # ours: checked before any work
    if out.exists():
        out.rename(old)
    new.rename(out)
    if old.exists():
        shutil.rmtree(old)


def build_ulr_vectors(cfg: PrepareConfig, out: Path, en_vocab, src_vocabs: dict, train_ids: dict, log) -> dict:
    """vectors/en.npy (normalised English piece vectors), vectors/keys.npy
    (universal token ids), vectors/<table>.npy (query vectors in the English
    space) and the alignment report. A language's alignment is seeded by its
    dictionary (cfg.dictionaries, else the pack's MUSE training split) and
    falls back to the pairs induced from the parallel text."""
    import numpy as np

    from .dictionaries import default_dictionary, read_dictionary
    from .vectors import align_language, center, piece_vectors, universal_token_ids, word_counts

    folder = out / "vectors"
    folder.mkdir()
    seed, dim, ep, cap = cfg.seed, cfg.vector_dim, cfg.vector_epochs, cfg.vector_max_sentences
    langs = list(train_ids)
    en_ids = [ids for lang in langs for ids in train_ids[lang][1]]
    en_mono = [ids for f in cfg.mono_files.get("en", []) for ids in en_vocab.encode_batch(_read_mono(f))]
    rng = random.Random(seed)
    en_corpus = en_mono + rng.sample(en_ids, min(len(en_ids), 2 * cap))  # English: twice a language's share
    t0 = time.time()
    en_vecs, how = piece_vectors(en_vocab, en_corpus, dim, ep, seed, len(en_corpus), cfg.vector_files.get("en", ""))
    log(f"  en: vectors {how} ({time.time() - t0:.0f}s)")
    en_vecs = center(en_vecs)
    keys = universal_token_ids(en_ids, len(en_vocab), cfg.num_universal)
    np.save(folder / "en.npy", en_vecs)
    np.save(folder / "keys.npy", keys)
    en_words = word_counts(en_vocab, en_ids)
    report = {"dim": dim, "num_universal": int(len(keys)), "english_vectors": how, "languages": {}}
    packs = [s.path for s in cfg.sources if s.type == "pack"]
    tables = {}
    for lang in langs:
        tables.setdefault(src_vocabs[lang].lang, []).append(lang)
    for table, members in tables.items():
        t0 = time.time()
        vocab = src_vocabs[members[0]]
        src_ids, tgt_ids = [], []
        for lang in members:
            src_ids += train_ids[lang][0]
            tgt_ids += train_ids[lang][1]
        mono = [ids for lang in members for f in cfg.mono_files.get(lang, []) for ids in vocab.encode_batch(_read_mono(f))]
        vec_file = cfg.vector_files.get(table, "")
        pairs, dict_files = [], []
        for lang in members:
            path = cfg.dictionaries.get(lang, "")
            if not path and cfg.dictionary_dir != "none":
                if cfg.dictionary_dir:
                    guess = Path(cfg.dictionary_dir) / f"{lang}-en.0-5000.txt"
                    path = str(guess) if guess.is_file() else ""
                else:
                    path = next((p for p in (default_dictionary(pk, lang) for pk in packs) if p), "")
            if path and path != "none":
                pairs += read_dictionary(path)
                dict_files.append(path)
        al = align_language(
            vocab, src_ids, tgt_ids, en_vecs, dim, ep, seed, cap, mono, vec_file,
            dictionary=pairs or None, en_vocab=en_vocab, seeds=cfg.dictionary_seeds, en_words=en_words,
            dictionary_projection=cfg.dictionary_projection,
        )
        np.save(folder / f"{table}.npy", al.vectors)
        al.report["dictionary_files"] = dict_files
        report["languages"][table] = al.report
        r = al.report
        log(
            f"  {table}: seeds {r['seeds']} ({r['dictionary_word_pairs_used']} dictionary word pairs in the text, "
            f"{r['dictionary_pairs']} induced piece pairs); rotation precision@1 {r['precision_at_1']:.3f} on "
            f"{r['held_out_pairs']} held-out induced pairs; queries {r['queries']}; vectors {r['vectors']} "
            f"({time.time() - t0:.0f}s)"
        )
    (out / "alignment_report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def _read_mono(path: str) -> list[str]:
    return [normalize(line) for line in sources.read_lines(path) if line.strip()]


def load_ulr_vectors(folder: str | Path) -> dict:
    """The fixed ULR vectors of a prepared folder, as build_model wants them."""
    import numpy as np

    vdir = Path(folder) / "vectors"
    if not (vdir / "en.npy").is_file():
        raise ConfigError(f"{folder}: no ULR vectors; prepare it with ulr_vectors: true (or --ulr-vectors)")
    return {
        "en_vectors": np.load(vdir / "en.npy"),
        "key_ids": np.load(vdir / "keys.npy"),
        "queries": {p.stem: np.load(p) for p in vdir.glob("*.npy") if p.stem not in ("en", "keys")},
    }


def _raw_english_overlap(texts: list[ParallelText]) -> dict:
    """Meta-train English lines that occur in protected sets, compared after
    whitespace normalisation only (how the pack README counts them)."""
    ws = lambda s: " ".join(s.split())  # noqa: E731
    core = {ws(t) for x in texts if x.role in ("adapt", "adapt-valid", "test") for t in x.tgt} - {""}
    extra = {ws(t) for x in texts if x.role not in TRAIN_ROLES for t in x.tgt} - {""}
    train = [ws(t) for x in texts if x.role in TRAIN_ROLES for t in x.tgt]
    return {
        "meta_train_en_lines_in_adapt_valid_test": sum(t in core for t in train),
        "meta_train_en_lines_in_any_protected_set": sum(t in extra for t in train),
        "distinct_en_sentences_in_any_protected_set": len({t for t in train if t in extra}),
    }


def verify_no_overlap(folder: str | Path, train_langs: list[str]) -> dict:
    """Decode every training and validation pair written under `folder`/data
    (with the folder's own vocabularies) and compare both sides with every
    protected set written under `folder`/text, read back from disk: a source
    line against the protected source sides, an English line against the
    protected English sides (whitespace-normalised, as decontamination
    compares). Raises DataError on any overlap; returns what was checked."""
    folder = Path(folder)
    protected_src, protected_en, sets = set(), set(), 0
    for pair_dir in sorted((folder / "text").glob(f"*-{TARGET_LANG}")):
        lang = pair_dir.name[: -len(TARGET_LANG) - 1]
        for role_dir in sorted(p for p in pair_dir.iterdir() if p.is_dir()):
            for name in protected_names(folder, lang, role_dir.name):
                t = read_protected(folder, lang, role_dir.name, name)
                protected_src.update(match_key(x) for x in t.src if x.strip())
                protected_en.update(match_key(x) for x in t.tgt if x.strip())
                sets += 1
    en_vocab, src_vocabs, joint = load_prepared_vocabs_unchecked(folder, train_langs)
    checked, leaks = 0, []
    for lang in train_langs:
        src_vocab = src_vocabs["src" if joint else lang]
        for split in ("train", "valid"):
            path = folder / "data" / f"{lang}-{TARGET_LANG}" / f"{split}.npz"
            src_ids, tgt_ids = load_pairs(path)
            for s_ids, t_ids in zip(src_ids, tgt_ids):
                src_line, en_line = match_key(src_vocab.decode(s_ids)), match_key(en_vocab.decode(t_ids))
                if src_line in protected_src or en_line in protected_en:
                    leaks.append(f"{path.name} of {lang}: {(en_line if en_line in protected_en else src_line)[:60]!r}")
            checked += len(src_ids)
    if leaks:
        raise DataError(
            f"{len(leaks)} written training/validation pair(s) occur in a protected adapt/valid/test set "
            f"(first: {leaks[0]}); decontamination failed, nothing was published"
        )
    return {"pairs_checked": checked, "protected_sets": sets, "protected_sentences": len(protected_src | protected_en), "overlap": 0}


def protected_names(folder: str | Path, lang: str, role: str) -> list[str]:
    """Names of a language's protected sets of one role in a prepared folder
    (sorted; empty when it has none)."""
    base = Path(folder) / "text" / f"{lang}-{TARGET_LANG}" / role
    return sorted(p.stem for p in base.glob(f"*.{lang}")) if base.is_dir() else []


def protected_files(folder: str | Path, lang: str, role: str, name: str | None = None) -> tuple[Path, Path, str]:
    """Source and reference paths of a protected set in a prepared folder."""
    base = Path(folder) / "text" / f"{lang}-{TARGET_LANG}" / role
    if not base.is_dir():
        raise DataError(f"{base}: no {role} set for {lang!r} in the prepared folder")
    names = protected_names(folder, lang, role)
    if name is None:
        if not names:
            raise DataError(f"{base}: no {role} set for {lang!r}")
        name = names[0]
    src, ref = base / f"{name}.{lang}", base / f"{name}.en"
    if not src.is_file():
        raise DataError(f"{src}: no {role} set named {name!r} for {lang!r} (have: {', '.join(names) or 'none'})")
    return src, ref, name


def is_pack(folder: str | Path) -> bool:
    """A corpus pack (MANIFEST.tsv), not a prepared folder (summary.json)."""
    p = Path(folder)
    return (p / sources.MANIFEST).is_file() and not (p / SUMMARY).is_file()


def read_pack_protected(pack: str | Path, lang: str, role: str, name: str | None = None) -> ParallelText:
    """A protected set read straight from a corpus pack, by its role in
    MANIFEST.tsv, as prepare writes it into a prepared folder (source side
    normalised, references as they are): adapt from a released model and
    score its test set without preparing the whole pack."""
    texts = sources.load_pack(pack, langs=[lang], roles=[role])
    names = sorted(t.name for t in texts)
    if name is None:
        if not names:
            raise DataError(f"{Path(pack) / sources.MANIFEST}: no {role} set for {lang!r}")
        name = names[0]
    found = [t for t in texts if t.name == name]
    if not found:
        raise DataError(f"{Path(pack) / sources.MANIFEST}: no {role} set named {name!r} for {lang!r} (have: {', '.join(names) or 'none'})")
    return normalize_protected(found[0])


def read_protected(folder, lang, role, name=None) -> ParallelText:
    """A protected set of a prepared folder (text/<xx>-en/<role>/), or of a
    corpus pack given instead of a prepared folder (read_pack_protected)."""
    if is_pack(folder):
        return read_pack_protected(folder, lang, role, name)
    src, ref, name = protected_files(folder, lang, role, name)
    s = src.read_text(encoding="utf-8").split("\n")[:-1]
    r = ref.read_text(encoding="utf-8").split("\n")[:-1]
    return ParallelText(lang, role, name, s, r, str(src))


__all__ = ["prepare", "is_pack", "load_summary", "load_ulr_vectors", "protected_files", "protected_names", "read_pack_protected", "read_protected", "normalize"]
