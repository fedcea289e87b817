"""Which monolingual vector settings align best (issue 13, item 3)?

For each language and each setting: train the language's piece vectors
(gensim FastText, one worker, as prepare/adapt do) with that setting, build
the ULR queries exactly as data_prep.vectors.align_vectors does (Procrustes
on dictionary seeds, mixed with the parallel-text projection, identical
pieces and dictionary translations), and score word translation X→English
with benchmarks.ulr_alignment.evaluate_language.

Selection never sees the MUSE test split: the training split
(`<xx>-en.0-5000.txt`, ordered by source-word frequency) is cut into a fit
part (seeds, dictionary translations in the queries) and a dev part, the
`--dev-words` least frequent source words of the split (ranks ~4,500-5,000,
the closest to the test split's 5,000-6,500). `--test` re-runs the chosen
settings with the whole training split as seeds and scores the test split
(`<xx>-en.5000-6500.txt`), for the final table only.

Targets (ro lv fi tr ko) get their text as `mtmeta adapt` does: the
800-sentence adapt set, a 2,000-piece vocabulary trained on it. Meta-train
languages: the prepared folder's vocabulary and training text. English
vectors and candidates: the prepared folder's (fixed; `mtmeta adapt` cannot
change them).

A setting is `key=value,...` over Setting's fields, e.g. `dim=200,epochs=80`;
`base` is today's pipeline. Scores: p@1 by nearest neighbour and CSLS for
the queries (`mix`), and CSLS for the rotated monolingual vectors alone
(`rot`, the part the vector settings change directly).

    taskset -c 1 env OMP_NUM_THREADS=1 python -m benchmarks.ulr_vector_sweep \\
        --data work/prepared-ulr --langs ro lv fi tr ko --grid targets --out work/ulr-tune/targets.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.ulr_alignment import TARGETS, english_candidates, evaluate_language, load_ids
from data_prep.dictionaries import read_dictionary
from data_prep.vectors import (
    EPOCH_REFERENCE_SENTENCES, MIX, N_SPECIAL, _unit, center, dictionary_pieces, dictionary_rows, identical_pieces,
    procrustes, project_cooccurrence, word_counts,
)
from data_prep.vocab import Vocab


@dataclass(frozen=True)
class Setting:
    dim: int = 100
    epochs: int = 0  # 0: today's rule (configured epochs, more for small text, at most 40)
    min_n: int = 2
    max_n: int = 5  # 0: no character n-grams (plain skip-gram)
    window: int = 5
    negative: int = 5
    sample: float = 1e-3
    min_count: int = 1
    sg: int = 1
    unit: str = "pieces"  # pieces | words (train on words, piece = vector of its string) | joint (source+English, see below)
    procrustes: float = MIX["procrustes"]  # weight of the rotated vectors in the query mix
    mono: str = ""  # extra monolingual text: 'adapt-extra' (fi, tr: the pack's extra WMT sets)
    dict_pairs: int = 0  # each fit dictionary pair added k times as a one-word parallel "sentence" (projection; joint corpus)
    seed: int = 1
    workers: int = 1

    @classmethod
    def parse(cls, text: str) -> "Setting":
        if text in ("", "base"):
            return cls()
        kw = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for part in text.split(","):
            k, v = part.split("=")
            kw[k] = {"int": int, "float": float, "str": str}[types[k]](v)
        return cls(**kw)

    def name(self) -> str:
        base = Setting()
        diff = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(base, f.name)]
        return ",".join(diff) or "base"


GRIDS = {
    # one factor at a time around today's pipeline, then combinations (appended by --also)
    "targets": [  # most informative first
        "base", "procrustes=0.0", "procrustes=1.0", "unit=joint", "unit=joint,procrustes=1.0",
        "epochs=10", "dim=50", "dim=300", "min_n=3,max_n=6", "max_n=0", "window=2", "window=10",
        "negative=15", "sample=0.0", "min_count=2", "sg=0", "unit=words", "seed=2", "seed=3",
    ],
    "meta": [  # a sample of meta-train languages: the factors that moved the targets most, and the dimension
        "base", "dict_pairs=1", "dict_pairs=3", "dict_pairs=10", "procrustes=0.0", "procrustes=1.0", "epochs=10", "window=2", "dim=300",
    ],
}


# --- text and dictionaries ---------------------------------------------------------------------


def split_dev(pairs: list[tuple[str, str]], n_dev: int) -> tuple[list, list]:
    """(fit, dev): dev = every pair of the `n_dev` last source words in file
    order (MUSE lists them by frequency rank)."""
    words = list(dict.fromkeys(s for s, _ in pairs))
    dev_words = set(words[-n_dev:])
    return [p for p in pairs if p[0] not in dev_words], [p for p in pairs if p[0] in dev_words]


@dataclass
class LangData:
    lang: str
    vocab: Vocab
    src_ids: list
    tgt_ids: list
    mono_text: dict  # name -> list of source-side sentences (ids)
    base_epochs: int  # the configured epochs today's rule starts from
    min_count: int  # induced-dictionary min count (adapt 2, prepare 3)
    src_text: list  # raw source sentences (unit=words)
    tgt_text: list


def load_language(data: Path, lang: str, summary: dict, en_vocab: Vocab) -> LangData:
    from data_prep.prepare import protected_names, read_protected

    if lang in summary["train_langs"]:
        table = "src" if summary["vocab_mode"] == "joint" else lang
        vocab = Vocab.load(data / "vocab" / f"{table}.model", lang)
        src_ids, tgt_ids = load_ids(data / "data" / f"{lang}-en" / "train.npz")
        src_text = [vocab.decode(s) for s in src_ids]
        tgt_text = [en_vocab.decode(t) for t in tgt_ids]
        return LangData(lang, vocab, src_ids, tgt_ids, {}, summary["config"]["vector_epochs"], 3, src_text, tgt_text)
    from data_prep.vocab import train_vocab
    from mtmeta.config import AdaptConfig

    acfg = AdaptConfig()
    train = read_protected(data, lang, "adapt")
    vocab = train_vocab(train.src, lang, acfg.src_vocab_size, acfg.seed)
    mono = {}
    extra = [x for name in protected_names(data, lang, "adapt-extra") for x in read_protected(data, lang, "adapt-extra", name).src]
    if extra:
        mono["adapt-extra"] = vocab.encode_batch(extra)
    return LangData(
        lang, vocab, vocab.encode_batch(train.src), en_vocab.encode_batch(train.tgt), mono, acfg.vector_epochs, 2,
        list(train.src), list(train.tgt),
    )


# --- vectors ----------------------------------------------------------------------------------


def effective_epochs(s: Setting, base_epochs: int, n_sentences: int) -> int:
    if s.epochs:
        return s.epochs
    return max(base_epochs, min(40, math.ceil(base_epochs * EPOCH_REFERENCE_SENTENCES / n_sentences)))


EN_MARK = "\u2582"  # English pieces in the joint corpus: a prefix no source piece has


def train_vectors(d: LangData, s: Setting, en_vocab: Vocab, en_vectors: np.ndarray, fit: list = ()) -> tuple[np.ndarray, int]:
    """Piece vectors of d.vocab (row order) under setting `s`, and the epochs used."""
    from gensim.models import FastText

    pieces = d.vocab.pieces()
    text = list(d.mono_text.get(s.mono, [])) + list(d.src_ids) if s.mono else list(d.src_ids)
    text = text[:50000]
    epochs = effective_epochs(s, d.base_epochs, len(text))
    if s.unit == "pieces":
        corpus = [[pieces[i] for i in x] for x in text if len(x)]
    elif s.unit == "words":
        corpus = [d.vocab.decode([i for i in x if i >= N_SPECIAL]).lower().split() for x in text]
        corpus = [c for c in corpus if c]
    elif s.unit == "joint":
        # Bilingual skip-gram on the parallel pairs (Vulić & Moens 2016): each
        # pair is one sentence of source and English pieces, shuffled, so a
        # window reaches across languages; plus the source text alone.
        rng = np.random.default_rng(s.seed)
        en_pieces = en_vocab.pieces()
        corpus = [[pieces[i] for i in x] for x in text if len(x)]
        dsrc, dtgt = dictionary_sentences(d, en_vocab, fit, s.dict_pairs)
        for x, y in zip(d.src_ids + dsrc, d.tgt_ids + dtgt):
            mixed = [pieces[i] for i in x] + [EN_MARK + en_pieces[j] for j in y if j >= N_SPECIAL]
            rng.shuffle(mixed)
            corpus.append(mixed)
    else:
        raise ValueError(s.unit)
    model = FastText(
        vector_size=s.dim, window=s.window, min_count=s.min_count, sg=s.sg, min_n=s.min_n, max_n=s.max_n,
        negative=s.negative, sample=s.sample, workers=s.workers, seed=s.seed, epochs=epochs,
    )
    model.build_vocab(corpus_iterable=corpus)
    model.train(corpus_iterable=corpus, total_examples=len(corpus), epochs=epochs)
    mat = np.zeros((len(pieces), s.dim), dtype=np.float32)
    for i in range(N_SPECIAL, len(pieces)):
        p = pieces[i]
        key = p.lstrip("\u2581") or p if s.unit == "words" else p
        if s.max_n == 0 and key not in model.wv.key_to_index:
            continue  # no n-grams: an unseen piece has no vector
        mat[i] = model.wv[key]
    if s.unit == "joint":
        # rotate the joint space onto the fixed English vectors with the English pieces as anchors
        en_rows = [j for j in range(N_SPECIAL, len(en_pieces)) if EN_MARK + en_pieces[j] in model.wv.key_to_index]
        jx = center(np.vstack([np.zeros((N_SPECIAL, s.dim), np.float32)] + [model.wv[EN_MARK + en_pieces[j]][None] for j in en_rows]))
        w = procrustes(jx[N_SPECIAL:], en_vectors[en_rows])
        src = center(mat)
        mat = _unit(src @ w)
        mat[:N_SPECIAL] = 0.0
    return mat, epochs


# --- queries ----------------------------------------------------------------------------------


def dictionary_sentences(d: LangData, en_vocab: Vocab, fit: list, k: int) -> tuple[list, list]:
    """The fit dictionary's pairs as segmented one-word parallel sentences, k
    times (as align_vectors' dictionary_projection)."""
    from data_prep.vectors import dictionary_sentences as one_word_pairs

    if not k:
        return [], []
    src, tgt = one_word_pairs(d.vocab, en_vocab, fit)
    return src * k, tgt * k


def fixed_parts(d: LangData, en_vocab: Vocab, ys: np.ndarray, fit: list, dict_pairs: int = 0) -> np.ndarray:
    """The query components that do not depend on the vectors."""
    dsrc, dtgt = dictionary_sentences(d, en_vocab, fit, dict_pairs)
    return (
        MIX["projection"] * project_cooccurrence(d.src_ids + dsrc, d.tgt_ids + dtgt, len(d.vocab), ys)
        + MIX["identical"] * identical_pieces(d.vocab, en_vocab, ys)
        + MIX["dictionary"] * dictionary_pieces(d.vocab, en_vocab, ys, fit)
    )


def rotate(vecs: np.ndarray, d: LangData, en_vocab: Vocab, ys: np.ndarray, fit: list, src_words: dict, en_count: dict) -> tuple[np.ndarray, int]:
    """Procrustes on the fit dictionary's word pairs (as align_vectors with
    seeds 'dictionary'); the rotated unit vectors."""
    xs = center(vecs)
    dx, dy = dictionary_rows(xs, ys, d.vocab, en_vocab, fit, src_words, en_count)
    w = procrustes(dx, dy)
    rot = _unit(xs @ w)
    rot[:N_SPECIAL] = 0.0
    return rot, len(dx)


def queries(rot: np.ndarray, fixed: np.ndarray, weight: float) -> np.ndarray:
    q = _unit(weight * rot + fixed)
    q[:N_SPECIAL] = 0.0
    return q.astype(np.float32)


def limits(pairs: list, en_words: list, d: LangData, seen: dict) -> dict:
    """What bounds precision on these pairs: how many evaluated words are
    spelled like one of their translations (reachable through identical
    pieces) and how many of the rest never occur in the text."""
    from data_prep.dictionaries import group

    index = set(en_words)
    gold = {s: ts for s, ts in group(pairs).items() if any(t in index for t in ts)}
    identical = sum(s in ts for s, ts in gold.items())
    unseen_other = sum(s not in ts and s not in seen for s, ts in gold.items())
    return {"identical_to_translation": identical, "unseen_not_identical": unseen_other}


def run_language(d, settings, en_vocab, en_vectors, en_words, en_vecs, en_count, fit, evals, log=print) -> list[dict]:
    """Every setting for one language; evals: {name: pairs} scored."""
    ys = center(en_vectors)
    fixed_cache = {}
    src_words_cache, cache = {}, {}
    rows = []
    for s in settings:
        if s.mono and s.mono not in d.mono_text:
            continue
        if s.dict_pairs not in fixed_cache:
            fixed_cache[s.dict_pairs] = fixed_parts(d, en_vocab, ys, fit, s.dict_pairs)
        fixed = fixed_cache[s.dict_pairs]
        key = dataclasses.replace(s, procrustes=MIX["procrustes"])  # the weight only changes the mix: same vectors
        if s.unit != "joint":
            key = dataclasses.replace(key, dict_pairs=0)  # dictionary sentences enter monolingual vectors nowhere
        if key not in cache:
            t0, w0 = time.process_time(), time.time()
            vecs, epochs = train_vectors(d, s, en_vocab, ys, fit)
            cache[key] = (vecs, epochs, time.process_time() - t0, time.time() - w0)
        vecs, epochs, cpu, wall = cache[key]
        text = list(d.mono_text.get(s.mono, [])) + list(d.src_ids) if s.mono else d.src_ids
        if s.mono not in src_words_cache:
            src_words_cache[s.mono] = word_counts(d.vocab, text)
        rot, n_seeds = rotate(vecs, d, en_vocab, ys, fit, src_words_cache[s.mono], en_count)
        q = queries(rot, fixed, s.procrustes)
        row = {"lang": d.lang, "setting": s.name(), "epochs": epochs, "seed_pairs": n_seeds,
               "train_cpu_s": round(cpu, 2), "train_wall_s": round(wall, 2)}
        for name, pairs in evals.items():
            r = evaluate_language(d.vocab, q, d.src_ids, pairs, en_words, en_vecs)
            rr = evaluate_language(d.vocab, rot, d.src_ids, pairs, en_words, en_vecs)
            row[name] = {"evaluated": r["evaluated"], "seen_in_text": r["seen_in_text"], "p1_nn": r["p1_nn"],
                         "p1_csls": r["p1_csls"], "p1_csls_seen": r["p1_csls_seen"], "rot_p1_csls": rr["p1_csls"],
                         **limits(pairs, en_words, d, src_words_cache[s.mono])}
        rows.append(row)
        log(json.dumps(row), flush=True)
    return rows


def summarize(rows: list[dict], split: str) -> dict:
    """Per setting: mean over languages of mix CSLS, NN and rot CSLS, and total train seconds."""
    out = {}
    for r in rows:
        o = out.setdefault(r["setting"], {"langs": 0, "p1_csls": 0.0, "p1_nn": 0.0, "rot_p1_csls": 0.0, "train_cpu_s": 0.0})
        o["langs"] += 1
        for k in ("p1_csls", "p1_nn", "rot_p1_csls"):
            o[k] += r[split][k]
        o["train_cpu_s"] += r["train_cpu_s"]
    for o in out.values():
        for k in ("p1_csls", "p1_nn", "rot_p1_csls"):
            o[k] = round(o[k] / o["langs"], 4)
        o["train_cpu_s"] = round(o["train_cpu_s"], 1)
    return out


def workers_check(d: LangData, en_vocab: Vocab, en_vectors: np.ndarray, rounds: int = 2) -> dict:
    """Seconds and reproducibility of workers=1 vs 2, interleaved: each
    setting trained `rounds` times; identical = every repeat equals the first."""
    out = {}
    for r in range(rounds):
        for w in (1, 2):
            t0, c0 = time.time(), time.process_time()
            vecs, _ = train_vectors(d, Setting(workers=w), en_vocab, center(en_vectors))
            o = out.setdefault(f"workers={w}", {"wall_s": [], "cpu_s": [], "identical": True, "first": vecs})
            o["wall_s"].append(round(time.time() - t0, 2))
            o["cpu_s"].append(round(time.process_time() - c0, 2))
            o["identical"] &= bool(np.array_equal(vecs, o["first"]))
    for o in out.values():
        del o["first"]
    return out


def read_rows(paths: list[str]) -> list[dict]:
    """Rows from sweep outputs (.json) or their logs (one JSON row a line;
    a run cut short keeps the rows it finished). Later files win."""
    rows = {}
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        found = json.loads(text)["rows"] if path.endswith(".json") else [
            json.loads(line) for line in text.splitlines() if line.startswith('{"lang"')]
        for r in found:
            rows[(r["lang"], r["setting"], "test" if "test" in r else "dev")] = r
    return list(rows.values())


def table(rows: list[dict], split: str, langs: list[str], settings: list[str] | None = None) -> str:
    """Markdown: p@1 CSLS of the queries per setting and language, the mean,
    its change from base, the rotated vectors' mean p@1 and training CPU seconds."""
    by = {(r["lang"], r["setting"]): r for r in rows if split in r}
    settings = settings or list(dict.fromkeys(r["setting"] for r in rows if split in r))
    head = f"| setting | {' | '.join(langs)} | mean | Δ base | NN mean | rotated only | CPU s |"
    out = [head, "|---" + "|---:" * (len(langs) + 5) + "|"]
    base = [by[(x, "base")][split]["p1_csls"] for x in langs if (x, "base") in by]
    base_mean = statistics.mean(base) if len(base) == len(langs) else None
    for name in settings:
        got = [by.get((x, name)) for x in langs]
        if not all(got):
            continue
        m = statistics.mean(g[split]["p1_csls"] for g in got)
        out.append(
            f"| {name} | " + " | ".join(f"{g[split]['p1_csls']:.3f}" for g in got)
            + f" | **{m:.3f}** | {'' if base_mean is None else f'{m - base_mean:+.3f}'}"
            + f" | {statistics.mean(g[split]['p1_nn'] for g in got):.3f}"
            + f" | {statistics.mean(g[split]['rot_p1_csls'] for g in got):.3f}"
            + f" | {sum(g['train_cpu_s'] for g in got):.0f} |"
        )
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="work/prepared-ulr")
    ap.add_argument("--dictionaries", default="../shared/dictionaries/muse")
    ap.add_argument("--langs", nargs="*", default=TARGETS)
    ap.add_argument("--grid", default="", choices=["", *GRIDS])
    ap.add_argument("--settings", nargs="*", default=[], help="settings besides the grid's (key=value,...)")
    ap.add_argument("--dev-words", type=int, default=500)
    ap.add_argument("--test", action="store_true", help="final numbers: fit on the whole training split, score the test split")
    ap.add_argument("--workers-check", action="store_true", help="only time workers=1 vs 2 (interleaved) and check repeats are identical")
    ap.add_argument("--report", nargs="*", default=None, help="only merge these sweep outputs (.json or .log) into --out and print tables")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if args.report is not None:
        rows = read_rows(args.report)
        merged = {"sources": args.report, "rows": rows}
        for split in ("dev", "test"):
            part = [r for r in rows if split in r]
            for group_name, langs in (("targets", TARGETS), ("meta_train_sample", sorted({r["lang"] for r in part} - set(TARGETS)))):
                sub = [r for r in part if r["lang"] in langs]
                if sub:
                    merged[f"{split}/{group_name}"] = summarize(sub, split)
                    have = [x for x in langs if any(r["lang"] == x for r in sub)]
                    print(f"\n{split}, {group_name}\n" + table(sub, split, have))
        if args.out:
            Path(args.out).write_text(json.dumps(merged, indent=1), encoding="utf-8")
        return
    data = Path(args.data)
    summary = json.loads((data / "summary.json").read_text(encoding="utf-8"))
    en_vocab = Vocab.load(data / "vocab" / "en.model", "en")
    en_vectors = np.load(data / "vectors" / "en.npy")
    if args.workers_check:
        result = {lang: workers_check(load_language(data, lang, summary, en_vocab), en_vocab, en_vectors) for lang in args.langs}
        print(json.dumps(result), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
        return
    en_ids = [t for lang in summary["train_langs"] for t in load_ids(data / "data" / f"{lang}-en" / "train.npz")[1]]
    en_words, en_vecs = english_candidates(en_vocab, en_vectors, en_ids)
    en_count = word_counts(en_vocab, en_ids)
    settings = list(dict.fromkeys(Setting.parse(x) for x in (GRIDS.get(args.grid, []) + args.settings)))
    print(f"{len(en_words)} English candidates; {len(settings)} settings; languages {' '.join(args.langs)}", flush=True)
    rows = []
    t_all = time.time()
    for lang in args.langs:
        d = load_language(data, lang, summary, en_vocab)
        train_pairs = read_dictionary(Path(args.dictionaries) / f"{lang}-en.0-5000.txt")
        if args.test:
            fit, evals = train_pairs, {"test": read_dictionary(Path(args.dictionaries) / f"{lang}-en.5000-6500.txt")}
        else:
            fit, dev = split_dev(train_pairs, args.dev_words)
            evals = {"dev": dev}
        rows += run_language(d, settings, en_vocab, en_vectors, en_words, en_vecs, en_count, fit, evals)
    split = "test" if args.test else "dev"
    result = {
        "command": "python -m benchmarks.ulr_vector_sweep " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "data": str(data), "split": split, "dev_words": args.dev_words, "english_candidates": len(en_words),
        "wall_minutes": round((time.time() - t_all) / 60, 1),
        "by_setting": summarize(rows, split), "rows": rows,
    }
    base = result["by_setting"].get("base")
    for name, o in sorted(result["by_setting"].items(), key=lambda kv: -kv[1]["p1_csls"]):
        delta = f" ({o['p1_csls'] - base['p1_csls']:+.4f})" if base else ""
        print(f"{name:40s} csls {o['p1_csls']:.4f}{delta} nn {o['p1_nn']:.4f} rot {o['rot_p1_csls']:.4f} cpu {o['train_cpu_s']}s", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
