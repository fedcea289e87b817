"""Monolingual subword vectors and their alignment to English, for the
Universal Lexical Representation (ULR).

Offline default, per language:
 1. skip-gram vectors with character n-grams (gensim's FastText) over the
    language's sentencepiece pieces;
 2. a seed dictionary induced from the parallel sentences: source piece s and
    English piece e are paired when each is the other's best Dice
    co-occurrence partner;
 3. orthogonal Procrustes maps the language into the English space; 20% of
    the dictionary is held out to report precision@1.
Users can bring their own vectors as fastText `.vec` text files instead.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from mtmeta.errors import DataError
from .vocab import N_SPECIAL, Vocab

logging.getLogger("gensim").setLevel(logging.WARNING)

EPOCH_REFERENCE_SENTENCES = 50_000  # corpora this large train for the configured epochs


# --- fastText .vec text format --------------------------------------------------


def write_vec(path: str | Path, words: list[str], vectors: np.ndarray) -> None:
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{len(words)} {vectors.shape[1]}\n")
        for w, v in zip(words, vectors):
            f.write(w + " " + " ".join(f"{x:.6g}" for x in v) + "\n")


def read_vec(path: str | Path) -> dict[str, np.ndarray]:
    """fastText .vec: a 'count dim' header line, then 'word x1 ... xdim'."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: vector file not found")
    out: dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            header = f.readline().split()
            if len(header) != 2 or not all(h.isdigit() for h in header):
                raise DataError(f"{path}: first line must be '<count> <dim>' (fastText .vec format)")
            dim = int(header[1])
            for lineno, line in enumerate(f, start=2):
                parts = line.rstrip("\n").rstrip(" ").split(" ")
                if len(parts) != dim + 1:
                    raise DataError(f"{path}:{lineno}: expected a word and {dim} numbers, got {len(parts) - 1}")
                out[parts[0]] = np.asarray(parts[1:], dtype=np.float32)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 ({e.reason})") from None
        except ValueError as e:
            raise DataError(f"{path}: bad number ({e})") from None
    return out


def vectors_for_vocab(vocab: Vocab, table: dict[str, np.ndarray], dim: int) -> tuple[np.ndarray, int]:
    """Rows in vocabulary order; pieces the table lacks (and specials) get
    zero vectors. Returns (matrix, number found)."""
    mat = np.zeros((len(vocab), dim), dtype=np.float32)
    found = 0
    for i, piece in enumerate(vocab.pieces()):
        if i >= N_SPECIAL and piece in table:
            if table[piece].shape[0] != dim:
                raise DataError(f"vector for {piece!r} has dimension {table[piece].shape[0]}, expected {dim}")
            mat[i] = table[piece]
            found += 1
    return mat, found


# --- training ------------------------------------------------------------------------


def train_piece_vectors(
    vocab: Vocab,
    sentences: list[list[int]],
    dim: int,
    epochs: int = 5,
    seed: int = 1,
    max_sentences: int = 30000,
    min_n: int = 2,
    max_n: int = 5,
    window: int = 5,
    workers: int = 1,
) -> np.ndarray:
    """Skip-gram vectors with character n-grams for every piece of `vocab`
    (pieces never seen in the text still get a vector from their n-grams).
    `epochs` is a minimum: smaller corpora get proportionally more.
    One worker thread: gensim ignores its seed with several (thread
    scheduling orders the updates), so only workers=1 gives the same
    vectors for the same text and seed."""
    from gensim.models import FastText

    pieces = vocab.pieces()
    corpus = [[pieces[i] for i in s] for s in sentences[:max_sentences] if len(s)]
    if not corpus:
        raise DataError(f"no text to train {vocab.lang!r} vectors on")
    # Small corpora get more passes (up to 40): with 5 epochs a 12K-sentence
    # language aligned at precision@1 0.004, with 20 at 0.10 (Danish, measured).
    epochs = max(epochs, min(40, math.ceil(epochs * EPOCH_REFERENCE_SENTENCES / len(corpus))))
    model = FastText(
        vector_size=dim,
        window=window,
        min_count=1,
        sg=1,
        min_n=min_n,
        max_n=max_n,
        workers=workers,
        seed=seed,
        epochs=epochs,
    )
    model.build_vocab(corpus_iterable=corpus)
    model.train(corpus_iterable=corpus, total_examples=len(corpus), epochs=epochs)
    mat = np.zeros((len(vocab), dim), dtype=np.float32)
    for i in range(N_SPECIAL, len(pieces)):
        mat[i] = model.wv[pieces[i]]
    return mat


# --- dictionary induction and alignment ---------------------------------------------


def _incidence(sentences: list[list[int]], size: int) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(sentences)), [len(s) for s in sentences])
    cols = np.fromiter((i for s in sentences for i in s), dtype=np.int64, count=len(rows))
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(sentences), size))
    m.data[:] = 1.0  # presence, not counts
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def induce_dictionary(
    src: list[list[int]], tgt: list[list[int]], src_size: int, tgt_size: int, min_count: int = 3, min_dice: float = 0.3
) -> list[tuple[int, int]]:
    """Mutual-best Dice pairs (source id, English id) from parallel sentences."""
    S, E = _incidence(src, src_size), _incidence(tgt, tgt_size)
    co = (S.T @ E).tocoo()
    fs = np.asarray(S.sum(0)).ravel()
    fe = np.asarray(E.sum(0)).ravel()
    keep = (co.row >= N_SPECIAL) & (co.col >= N_SPECIAL) & (fs[co.row] >= min_count) & (fe[co.col] >= min_count)
    r, c, n = co.row[keep], co.col[keep], co.data[keep]
    if not len(r):
        return []
    dice = 2 * n / (fs[r] + fe[c])
    best_for_src = np.full(src_size, -1.0)
    best_for_tgt = np.full(tgt_size, -1.0)
    np.maximum.at(best_for_src, r, dice)
    np.maximum.at(best_for_tgt, c, dice)
    mutual = (dice >= min_dice) & (dice == best_for_src[r]) & (dice == best_for_tgt[c])
    return sorted(zip(r[mutual].tolist(), c[mutual].tolist()))


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-8)


def center(x: np.ndarray) -> np.ndarray:
    """Unit length, mean removed (over real pieces), unit length again: the
    usual normalisation before Procrustes (Artetxe et al. 2018)."""
    x = _unit(x)
    x[N_SPECIAL:] -= x[N_SPECIAL:].mean(0)
    out = _unit(x)
    out[:N_SPECIAL] = 0.0
    return out


def procrustes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Orthogonal W minimising ||x W - y||_F (Schönemann 1966). When the
    two spaces differ in dimension, W has orthonormal rows (source smaller)
    or columns (source larger)."""
    u, _, vt = np.linalg.svd(x.T @ y, full_matrices=x.shape[1] == y.shape[1])
    return u @ vt


def precision_at_1(x: np.ndarray, y_all: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    """Share of (s, e) pairs whose aligned source vector's nearest English
    vector (cosine) is e."""
    if not pairs:
        return float("nan")
    xs = _unit(x[[s for s, _ in pairs]])
    sims = xs @ _unit(y_all).T
    sims[:, :N_SPECIAL] = -np.inf
    return float(np.mean(sims.argmax(1) == np.array([e for _, e in pairs])))


@dataclass
class Alignment:
    vectors: np.ndarray  # aligned, unit-length source vectors in vocabulary order
    report: dict


def align_to_english(
    src_vectors: np.ndarray, en_vectors: np.ndarray, dictionary: list[tuple[int, int]], seed: int = 1, held_out: float = 0.2
) -> Alignment:
    """Rotate normalised source vectors into the (normalised) English space;
    `en_vectors` must already be normalised with `center` for the queries to
    match ULR's keys."""
    if len(dictionary) < 10:
        raise DataError(f"seed dictionary too small to align ({len(dictionary)} pairs; need 10)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(dictionary))
    n_test = max(1, int(len(dictionary) * held_out))
    test = [dictionary[i] for i in order[:n_test]]
    train = [dictionary[i] for i in order[n_test:]]
    xs, ys = center(src_vectors), center(en_vectors)
    w = procrustes(xs[[s for s, _ in train]], ys[[e for _, e in train]])
    aligned = _unit(xs @ w)
    aligned[:N_SPECIAL] = 0.0
    report = {
        "dictionary_pairs": len(dictionary),
        "train_pairs": len(train),
        "held_out_pairs": len(test),
        "precision_at_1": round(precision_at_1(aligned, ys, test), 4),
        "precision_at_1_unaligned": round(precision_at_1(xs, ys, test), 4) if xs.shape[1] == ys.shape[1] else None,
    }
    return Alignment(aligned.astype(np.float32), report)


# --- the ULR vector set of a prepared folder ------------------------------------------------


def piece_vectors(
    vocab: Vocab, ids: list[list[int]], dim: int, epochs: int, seed: int, max_sentences: int, vec_file: str = ""
) -> tuple[np.ndarray, str]:
    """Vectors for every piece of `vocab`: from the user's .vec file when
    given (missing pieces are zero), else trained on `ids`."""
    if vec_file:
        table = read_vec(vec_file)
        if not table:
            raise DataError(f"{vec_file}: no vectors")
        file_dim = next(iter(table.values())).shape[0]
        if file_dim != dim:
            raise DataError(f"{vec_file}: vectors have dimension {file_dim}, the run uses vector_dim {dim}")
        mat, found = vectors_for_vocab(vocab, table, dim)
        return mat, f"{vec_file} ({found}/{len(vocab) - N_SPECIAL} pieces found)"
    return train_piece_vectors(vocab, ids, dim, epochs, seed, max_sentences), f"trained on {min(len(ids), max_sentences)} sentences"


def universal_token_ids(tgt_ids: list[list[int]], vocab_size: int, k: int) -> np.ndarray:
    """The k most frequent English pieces (ties by id), specials excluded."""
    counts = np.bincount(np.fromiter((i for t in tgt_ids for i in t), dtype=np.int64), minlength=vocab_size)
    counts[:N_SPECIAL] = -1
    k = min(k, vocab_size - N_SPECIAL)
    return np.sort(np.argsort(-counts, kind="stable")[:k])


def word_counts(vocab: Vocab, ids: list[list[int]]) -> dict[str, int]:
    """Lower-cased word types (\\w+ runs) of the decoded text, with counts."""
    import re
    from collections import Counter

    word = re.compile(r"\w+")
    c: Counter = Counter()
    for sent in vocab.sp.decode([[i for i in s if i >= N_SPECIAL] for s in ids]) if ids else []:
        c.update(word.findall(sent.lower()))
    return dict(c)


def dictionary_rows(
    xs: np.ndarray,
    ys: np.ndarray,
    vocab: Vocab,
    en_vocab: Vocab,
    pairs: list[tuple[str, str]],
    src_words: dict[str, int] | None = None,
    en_words: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Procrustes rows for word pairs: each word is the mean of its
    (normalised) piece vectors under its language's segmentation. Pairs
    whose source (English) word is missing from `src_words` (`en_words`),
    when given, are left out: a word never seen in the text has only the
    vectors of pieces it was never seen with."""
    from .dictionaries import segment, word_vectors

    keep = [
        (s, e) for s, e in pairs if (src_words is None or s in src_words) and (en_words is None or e in en_words)
    ]
    if not keep:
        return np.zeros((0, xs.shape[1]), np.float32), np.zeros((0, ys.shape[1]), np.float32)
    sx = word_vectors(xs, segment(vocab, [s for s, _ in keep]))
    ey = word_vectors(ys, segment(en_vocab, [e for _, e in keep]))
    ok = (np.abs(sx).sum(1) > 0) & (np.abs(ey).sum(1) > 0)
    return sx[ok], ey[ok]


SEEDS = ("dictionary", "induced", "both")

# How the query of a source piece is composed (all parts unit length, in
# the English space): the Dice-weighted mean of the English pieces it
# co-occurs with in the parallel sentences, the English piece spelled the
# same way (names, numbers, shared subwords), the dictionary translations of
# the word the piece spells, and the Procrustes-rotated monolingual vector.
# Measured on MUSE test splits (de, da, sk; benchmarks/ulr_alignment.py):
# the rotated monolingual vectors alone give precision@1 ~0.01, the mix
# 0.11-0.20 (results/ulr_alignment_muse.md).
MIX = {"projection": 1.0, "identical": 1.0, "dictionary": 1.0, "procrustes": 0.5}


def project_cooccurrence(
    src_ids: list[list[int]], tgt_ids: list[list[int]], src_size: int, en_vectors: np.ndarray, top: int = 10, power: float = 2.0
) -> np.ndarray:
    """Each source piece as the mean of the English piece vectors it
    co-occurs with (sentence level) in the parallel text, weighted by
    Dice^power over its `top` best partners; unit length, zero when unseen."""
    out = np.zeros((src_size, en_vectors.shape[1]), dtype=np.float32)
    if not src_ids:
        return out
    S, E = _incidence(src_ids, src_size), _incidence(tgt_ids, en_vectors.shape[0])
    co = (S.T @ E).tocsr()
    fs = np.asarray(S.sum(0)).ravel()
    fe = np.asarray(E.sum(0)).ravel()
    for i in range(N_SPECIAL, src_size):
        lo, hi = co.indptr[i], co.indptr[i + 1]
        cols, n = co.indices[lo:hi], co.data[lo:hi]
        keep = cols >= N_SPECIAL
        cols, n = cols[keep], n[keep]
        if not len(cols):
            continue
        dice = 2 * n / (fs[i] + fe[cols])
        best = np.argsort(-dice, kind="stable")[:top]
        out[i] = (dice[best] ** power) @ en_vectors[cols[best]]
    return _unit(out)


def dictionary_sentences(vocab: Vocab, en_vocab: Vocab, pairs: list[tuple[str, str]]) -> tuple[list[list[int]], list[list[int]]]:
    """Dictionary word pairs as one-word parallel sentences of piece ids
    (pairs where either word has no known piece are left out)."""
    from .dictionaries import segment

    src = segment(vocab, [s for s, _ in pairs])
    tgt = segment(en_vocab, [e for _, e in pairs])
    keep = [(x, y) for x, y in zip(src, tgt) if x and y]
    return [x for x, _ in keep], [y for _, y in keep]


def identical_pieces(vocab: Vocab, en_vocab: Vocab, en_vectors: np.ndarray) -> np.ndarray:
    """The English vector of the English piece spelled like each source
    piece (zero where English has no such piece)."""
    index = {p: i for i, p in enumerate(en_vocab.pieces())}
    out = np.zeros((len(vocab), en_vectors.shape[1]), dtype=np.float32)
    for i, p in enumerate(vocab.pieces()):
        j = index.get(p)
        if i >= N_SPECIAL and j is not None and j >= N_SPECIAL:
            out[i] = en_vectors[j]
    return out


def dictionary_pieces(vocab: Vocab, en_vocab: Vocab, en_vectors: np.ndarray, pairs: list[tuple[str, str]]) -> np.ndarray:
    """For a source piece that spells a whole dictionary word ('▁haus'),
    the mean of its translations' English word vectors; zero elsewhere."""
    from .dictionaries import group, segment, word_vectors

    index = {p: i for i, p in enumerate(vocab.pieces())}
    out = np.zeros((len(vocab), en_vectors.shape[1]), dtype=np.float32)
    for s, ts in group(pairs).items():
        i = index.get("\u2581" + s)
        if i is not None and i >= N_SPECIAL:
            out[i] = _unit(word_vectors(en_vectors, segment(en_vocab, ts)).mean(0, keepdims=True))[0]
    return out


def align_language(
    vocab: Vocab,
    src_ids: list[list[int]],
    tgt_ids: list[list[int]],
    en_vectors: np.ndarray,
    dim: int,
    epochs: int,
    seed: int,
    max_sentences: int,
    mono_ids: list[list[int]] | None = None,
    vec_file: str = "",
    min_count: int = 3,
    dictionary: list[tuple[str, str]] | None = None,
    en_vocab: Vocab | None = None,
    seeds: str = "dictionary",
    en_words: dict[str, int] | None = None,
    vector_options: dict | None = None,
    mix: dict | None = None,
    dictionary_projection: int = 0,
) -> Alignment:
    """Query vectors for one source language, in the English space.

    Monolingual vectors (its own side of the parallel data plus any
    monolingual text) are rotated into the English space by orthogonal
    Procrustes. Seeds: the word pairs of `dictionary` (a word is the mean of
    its pieces; needs `en_vocab`, the English pieces' vocabulary), the piece
    pairs induced from the parallel sentences, or both; without a
    dictionary, the induced pairs alone. 20% of the induced pairs are held
    out from the rotation to report its piece-level precision@1. Without
    `en_vocab` (or with mix {'procrustes': 1, others 0}) the queries are the
    rotated vectors alone; otherwise the rotated vectors are mixed (MIX)
    with the parallel-text projection, identical pieces and dictionary
    translations. `dictionary_projection` > 0 also adds every dictionary
    pair that many times to the parallel sentences the projection is
    computed from (see align_vectors)."""
    if seeds not in SEEDS:
        raise DataError(f"seeds {seeds!r} unknown ({', '.join(SEEDS)})")
    text = list(mono_ids or []) + list(src_ids)
    if vec_file:
        vecs, how = piece_vectors(vocab, text, dim, epochs, seed, max_sentences, vec_file)
    else:
        vecs = train_piece_vectors(vocab, text, dim, epochs, seed, max_sentences, **(vector_options or {}))
        how = f"trained on {min(len(text), max_sentences)} sentences"
    src_words = word_counts(vocab, text) if dictionary else None
    return align_vectors(
        vecs, vocab, src_ids, tgt_ids, en_vectors, seed, min_count, dictionary, en_vocab, seeds, src_words, en_words, mix, how,
        dictionary_projection,
    )


def align_vectors(
    vecs: np.ndarray,
    vocab: Vocab,
    src_ids: list[list[int]],
    tgt_ids: list[list[int]],
    en_vectors: np.ndarray,
    seed: int = 1,
    min_count: int = 3,
    dictionary: list[tuple[str, str]] | None = None,
    en_vocab: Vocab | None = None,
    seeds: str = "dictionary",
    src_words: dict[str, int] | None = None,
    en_words: dict[str, int] | None = None,
    mix: dict | None = None,
    how: str = "",
    dictionary_projection: int = 0,
) -> Alignment:
    """align_language after its monolingual vectors `vecs` exist.

    `dictionary_projection` = k > 0: each dictionary pair, segmented into
    its pieces, joins the parallel sentences k times as a one-word sentence
    pair for the co-occurrence projection only (not for the induced seeds).
    Pieces of dictionary words then co-occur with their translations'
    pieces even where the parallel text never shows them together, which
    is what reaches the many test words an 800-sentence adapt set never
    contains (results/ulr_vector_sweep.md)."""
    if seeds not in SEEDS:
        raise DataError(f"seeds {seeds!r} unknown ({', '.join(SEEDS)})")
    mix = dict(MIX if en_vocab is not None else {"procrustes": 1.0}, **(mix or {}))
    induced = induce_dictionary(src_ids, tgt_ids, len(vocab), en_vectors.shape[0], min_count=min_count)
    use_dict = bool(dictionary) and en_vocab is not None
    if not use_dict and len(induced) < 10:
        raise DataError(f"seed dictionary too small to align ({len(induced)} pairs; need 10)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(induced))
    n_test = max(1, int(len(induced) * 0.2)) if induced else 0
    test = [induced[i] for i in order[:n_test]]
    train = [induced[i] for i in order[n_test:]]
    xs, ys = center(vecs), center(en_vectors)
    rows_x, rows_y = [], []
    if not use_dict or seeds in ("induced", "both"):
        rows_x.append(xs[[s for s, _ in train]])
        rows_y.append(ys[[e for _, e in train]])
    n_dict = 0
    if use_dict and seeds in ("dictionary", "both"):
        dx, dy = dictionary_rows(xs, ys, vocab, en_vocab, dictionary, src_words, en_words)
        n_dict = len(dx)
        if n_dict < 10 and seeds == "dictionary":
            rows_x.append(xs[[s for s, _ in train]])  # too few dictionary words in the text: add the induced pairs
            rows_y.append(ys[[e for _, e in train]])
        rows_x.append(dx)
        rows_y.append(dy)
    x_rows, y_rows = np.concatenate(rows_x), np.concatenate(rows_y)
    if len(x_rows) < 10:
        raise DataError(f"{vocab.lang}: too few seed pairs to align ({len(x_rows)}; need 10)")
    w = procrustes(x_rows, y_rows)
    rotated = _unit(xs @ w)
    rotated[:N_SPECIAL] = 0.0
    queries = mix.get("procrustes", 0.0) * rotated
    parts = ["procrustes"]
    if en_vocab is not None:
        if mix.get("projection"):
            psrc, ptgt = src_ids, tgt_ids
            if dictionary_projection and use_dict:
                dsrc, dtgt = dictionary_sentences(vocab, en_vocab, dictionary)
                psrc, ptgt = list(src_ids) + dsrc * dictionary_projection, list(tgt_ids) + dtgt * dictionary_projection
            queries = queries + mix["projection"] * project_cooccurrence(psrc, ptgt, len(vocab), ys)
            parts.append("projection")
        if mix.get("identical"):
            queries = queries + mix["identical"] * identical_pieces(vocab, en_vocab, ys)
            parts.append("identical")
        if mix.get("dictionary") and use_dict:
            queries = queries + mix["dictionary"] * dictionary_pieces(vocab, en_vocab, ys, dictionary)
            parts.append("dictionary")
    queries = _unit(queries)
    queries[:N_SPECIAL] = 0.0
    report = {
        "seeds": seeds if use_dict else "induced",
        "dictionary_word_pairs_used": n_dict,
        "dictionary_pairs": len(induced),
        "train_pairs": len(train),
        "held_out_pairs": len(test),
        "precision_at_1": round(precision_at_1(rotated, ys, test), 4),
        "precision_at_1_unaligned": round(precision_at_1(xs, ys, test), 4) if xs.shape[1] == ys.shape[1] else None,
        "queries": "+".join(f"{mix.get(p, 0)}*{p}" for p in parts),
        "dictionary_projection": dictionary_projection if use_dict and mix.get("projection") else 0,
        "vectors": how,
    }
    return Alignment(queries.astype(np.float32), report)
