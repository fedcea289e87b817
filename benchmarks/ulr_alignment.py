"""Word-translation precision@1 of the ULR alignment on bilingual test dictionaries.

For every language: the aligned piece vectors of a prepared folder
(vectors/<xx>.npy; for a target language, which has none, the queries that
`mtmeta adapt` would build from its adapt set), words = mean of their pieces'
vectors, and retrieval of the English translation of each test-split source
word by nearest neighbour (cosine) and by CSLS (k=10, Conneau et al. 2018).
A hit is when the retrieved English word is any of the listed translations.

English candidate set: the lower-cased word types (\\w+ runs) that occur at
least twice in the English side of the prepared folder's meta-train text,
each the mean of its English pieces' vectors. Source words for CSLS's
source-side neighbourhood: the word types seen at least twice in the
language's text, plus the test words. Test pairs whose translations are all
outside the English candidate set cannot be hit and are left out (counted).

    python -m benchmarks.ulr_alignment --data work/prepared-ulr \\
        --dictionaries ../shared/dictionaries/muse --out results/ulr_alignment_muse.json

Never fit on the test split: it is read here only.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from data_prep.dictionaries import group, read_dictionary, segment, word_vectors
from data_prep.vectors import word_counts
from data_prep.vocab import Vocab

META_TRAIN = "bg cs da de el es et fr hu it lt nl pl pt sk sl sv ru".split()
TARGETS = "ro lv fi tr ko".split()
CSLS_K = 10


def _topk_mean(sims: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    out = np.empty(sims.shape[0], dtype=np.float32)
    for i in range(0, sims.shape[0], chunk):
        part = sims[i : i + chunk]
        out[i : i + chunk] = -np.partition(-part, k - 1, axis=1)[:, :k].mean(1)
    return out


def retrieve(queries: np.ndarray, cands: np.ndarray, src_space: np.ndarray, k: int = CSLS_K) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the nearest candidate per query: by cosine and by CSLS.
    All inputs unit length. `src_space`: the source words whose neighbourhood
    of each candidate gives CSLS's r_S term."""
    sims = queries @ cands.T
    nn = sims.argmax(1)
    r_t = _topk_mean(sims, k)  # each query's mean similarity to its k nearest candidates
    r_s = np.empty(cands.shape[0], dtype=np.float32)
    for i in range(0, cands.shape[0], 4096):
        r_s[i : i + 4096] = _topk_mean(cands[i : i + 4096] @ src_space.T, k)
    csls = 2 * sims - r_t[:, None] - r_s[None, :]
    return nn, csls.argmax(1)


def english_candidates(en_vocab: Vocab, en_vectors: np.ndarray, en_ids: list[list[int]], min_count: int = 2):
    counts = word_counts(en_vocab, en_ids)
    words = sorted(w for w, c in counts.items() if c >= min_count)
    vecs = word_vectors(en_vectors, segment(en_vocab, words))
    return words, vecs


def evaluate_language(
    vocab: Vocab,
    aligned: np.ndarray,
    src_ids: list[list[int]],
    test_pairs: list[tuple[str, str]],
    en_words: list[str],
    en_vecs: np.ndarray,
    min_count: int = 2,
) -> dict:
    gold = group(test_pairs)
    index = {w: i for i, w in enumerate(en_words)}
    queries = [s for s, ts in gold.items() if any(t in index for t in ts)]
    if not queries:
        return {"test_words": len(gold), "evaluated": 0}
    seen = word_counts(vocab, src_ids)
    space_words = sorted({w for w, c in seen.items() if c >= min_count} | set(queries))
    space = word_vectors(aligned, segment(vocab, space_words))
    pos = {w: i for i, w in enumerate(space_words)}
    q = space[[pos[w] for w in queries]]
    nn, csls = retrieve(q, en_vecs, space)
    hit_nn = [en_words[j] in gold[w] for w, j in zip(queries, nn)]
    hit_csls = [en_words[j] in gold[w] for w, j in zip(queries, csls)]
    in_text = [w in seen for w in queries]
    sub = [i for i, s in enumerate(in_text) if s]
    return {
        "test_words": len(gold),
        "evaluated": len(queries),
        "unreachable": len(gold) - len(queries),
        "seen_in_text": len(sub),
        "p1_nn": round(float(np.mean(hit_nn)), 4),
        "p1_csls": round(float(np.mean(hit_csls)), 4),
        "p1_csls_seen": round(float(np.mean([hit_csls[i] for i in sub])), 4) if sub else None,
    }


def _load_ids(folder: Path, lang: str):
    return load_ids(folder / "data" / f"{lang}-en" / "train.npz")


def load_ids(path) -> tuple[list[list[int]], list[list[int]]]:
    with np.load(path) as z:
        src = np.split(z["src"], np.cumsum(z["src_len"])[:-1])
        tgt = np.split(z["tgt"], np.cumsum(z["tgt_len"])[:-1])
    return [s.tolist() for s in src], [t.tolist() for t in tgt]


def target_queries(data: Path, lang: str, en_vocab: Vocab, en_vectors: np.ndarray, dim: int, dictionary, seeds: str, en_words_count, log=print):
    """A target language's queries as `mtmeta adapt` builds them (its
    defaults: 2,000-piece vocabulary from the adapt set, 10 epochs,
    dictionary_projection)."""
    from data_prep.prepare import read_protected
    from data_prep.vectors import align_language
    from data_prep.vocab import train_vocab

    from mtmeta.config import AdaptConfig

    acfg = AdaptConfig()
    train = read_protected(data, lang, "adapt")
    vocab = train_vocab(train.src, lang, acfg.src_vocab_size, acfg.seed)
    src_ids = vocab.encode_batch(train.src)
    al = align_language(
        vocab, src_ids, en_vocab.encode_batch(train.tgt), en_vectors, dim, acfg.vector_epochs, acfg.seed, 50000,
        min_count=2, dictionary=dictionary, en_vocab=en_vocab, seeds=seeds, en_words=en_words_count,
        dictionary_projection=acfg.dictionary_projection,
    )
    return vocab, al.vectors, src_ids


VARIANTS = {
    # name: (seeds, mix); "old" is the pipeline before dictionaries: induced seeds, rotated vectors only
    "old": ("induced", {"procrustes": 1.0, "projection": 0.0, "identical": 0.0, "dictionary": 0.0}),
    "procrustes-dictionary": ("dictionary", {"procrustes": 1.0, "projection": 0.0, "identical": 0.0, "dictionary": 0.0}),
    "procrustes-both": ("both", {"procrustes": 1.0, "projection": 0.0, "identical": 0.0, "dictionary": 0.0}),
    "mix-induced": ("induced", None),
    "mix-dictionary": ("dictionary", None),
    "mix-both": ("both", None),
    "mix-no-procrustes": ("dictionary", {"procrustes": 0.0}),
}


def variant_rows(vocab, src_ids, tgt_ids, en_vocab, en_vectors, dictionary, en_count, test, en_words, en_vecs, dim, epochs, max_sentences, min_count, variants, prepared=None):
    """Retrain a language's monolingual vectors exactly as prepare/adapt do
    (one worker, same seed) and evaluate each variant of seeds and mix."""
    from data_prep.vectors import align_vectors, train_piece_vectors

    t0 = time.time()
    vecs = train_piece_vectors(vocab, src_ids, dim, epochs, 1, max_sentences)
    out = {"vector_seconds": round(time.time() - t0, 1)}
    src_words = word_counts(vocab, src_ids)
    for name in variants:
        seeds, mix = VARIANTS[name]
        al = align_vectors(vecs, vocab, src_ids, tgt_ids, en_vectors, 1, min_count, dictionary, en_vocab, seeds, src_words, en_count, mix)
        r = evaluate_language(vocab, al.vectors, src_ids, test, en_words, en_vecs)
        out[name] = {k: r[k] for k in ("p1_nn", "p1_csls", "p1_csls_seen")}
        if name == "mix-dictionary" and prepared is not None:
            out["identical_to_prepared"] = bool(np.array_equal(al.vectors, prepared))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="prepared folder with ULR vectors")
    ap.add_argument("--dictionaries", default="../shared/dictionaries/muse")
    ap.add_argument("--langs", nargs="*", default=META_TRAIN + TARGETS)
    ap.add_argument("--seeds", default="dictionary", help="seeds for target languages' adapt-time alignment")
    ap.add_argument("--variants", nargs="*", default=[], choices=list(VARIANTS), help="also retrain each language's vectors and compare these variants")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    data = Path(args.data)
    summary = json.loads((data / "summary.json").read_text(encoding="utf-8"))
    en_vocab = Vocab.load(data / "vocab" / "en.model", "en")
    en_vectors = np.load(data / "vectors" / "en.npy")
    train_langs = summary["train_langs"]
    en_ids = [t for lang in train_langs for t in _load_ids(data, lang)[1]]
    en_words, en_vecs = english_candidates(en_vocab, en_vectors, en_ids)
    en_count = word_counts(en_vocab, en_ids)
    print(f"English candidates: {len(en_words)} word types seen at least twice in {len(en_ids)} English sentences")
    rows = {}
    for lang in args.langs:
        t0 = time.time()
        test = read_dictionary(Path(args.dictionaries) / f"{lang}-en.5000-6500.txt")
        if lang in train_langs:
            table = "src" if summary["vocab_mode"] == "joint" else lang
            vocab = Vocab.load(data / "vocab" / f"{table}.model", lang)
            aligned = np.load(data / "vectors" / f"{table}.npy")
            src_ids = _load_ids(data, lang)[0]
            how = "prepared"
        else:
            d = read_dictionary(Path(args.dictionaries) / f"{lang}-en.0-5000.txt")
            vocab, aligned, src_ids = target_queries(
                data, lang, en_vocab, en_vectors, en_vectors.shape[1], d if args.seeds != "induced" else None, args.seeds, en_count
            )
            how = "adapt set"
        r = evaluate_language(vocab, aligned, src_ids, test, en_words, en_vecs)
        r["vectors"] = how
        if args.variants:
            cfg = summary["config"]
            if lang in train_langs:
                tgt_ids = _load_ids(data, lang)[1]
                d = read_dictionary(Path(args.dictionaries) / f"{lang}-en.0-5000.txt")
                ep, cap, mc, pre = cfg["vector_epochs"], cfg["vector_max_sentences"], 3, aligned
            else:
                from data_prep.prepare import read_protected
                from mtmeta.config import AdaptConfig

                tgt_ids = en_vocab.encode_batch(read_protected(data, lang, "adapt").tgt)
                ep, cap, mc, pre = AdaptConfig().vector_epochs, 50000, 2, None
            r["variants"] = variant_rows(
                vocab, src_ids, tgt_ids, en_vocab, en_vectors, d, en_count, test, en_words, en_vecs,
                en_vectors.shape[1], ep, cap, mc, args.variants, pre,
            )
        rows[lang] = r
        print(f"{lang}: {r} ({time.time() - t0:.0f}s)", flush=True)

    def med(key, langs):
        vals = [rows[x][key] for x in langs if x in rows and key in rows[x]]
        return round(statistics.median(vals), 4) if vals else None

    variant_medians = {}
    for name in args.variants:
        for key in ("p1_nn", "p1_csls"):
            for group_name, langs in (("all", list(rows)), ("meta_train", [x for x in META_TRAIN if x in rows])):
                vals = [rows[x]["variants"][name][key] for x in langs]
                if vals:
                    variant_medians[f"{name}/{key}/{group_name}"] = round(statistics.median(vals), 4)
    result = {
        "data": str(data),
        "english_candidates": len(en_words),
        "csls_k": CSLS_K,
        "languages": rows,
        "median_p1_nn_all": med("p1_nn", rows),
        "median_p1_csls_all": med("p1_csls", rows),
        "median_p1_nn_meta_train": med("p1_nn", META_TRAIN),
        "median_p1_csls_meta_train": med("p1_csls", META_TRAIN),
        "variant_medians": variant_medians,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "languages"}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
