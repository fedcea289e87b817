"""Adapt-time ULR queries (issue 13.3): dictionary pairs as one-word
sentence pairs in the co-occurrence projection (`dictionary_projection`),
and Procrustes between spaces of different dimension. Small synthetic
text only."""
import random
from types import SimpleNamespace

import numpy as np
import pytest

from data_prep.corpus import ParallelText
from data_prep.dictionaries import segment, word_vectors
from data_prep.vectors import align_language, center, procrustes
from data_prep.vocab import N_SPECIAL, train_vocab
from mtmeta.cli import build_parser
from mtmeta.config import AdaptConfig

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo sierra tango".split()
UNSEEN = "zulu"  # in the source's monolingual text and the dictionary, never in a parallel sentence


@pytest.fixture(scope="module")
def setup():
    rng = random.Random(0)
    en = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(300)]
    src = [" ".join(w[::-1] for w in s.split()) for s in en]
    mono = [f"{UNSEEN[::-1]} " + " ".join(rng.choice(WORDS)[::-1] for _ in range(6)) for _ in range(100)]
    src_vocab = train_vocab(src + mono, "xx", 60, 1)
    en_vocab = train_vocab(en + ["zulu"] * 20, "en", 60, 1)
    g = np.random.default_rng(1)
    en_vecs = g.standard_normal((len(en_vocab), 8)).astype(np.float32)
    en_vecs[:N_SPECIAL] = 0
    return src_vocab, en_vocab, src, en, mono, en_vecs


PROJECTION_ONLY = {"procrustes": 0.0, "projection": 1.0, "identical": 0.0, "dictionary": 0.0}


def _queries(setup, k: int) -> np.ndarray:
    src_vocab, en_vocab, src, en, mono, en_vecs = setup
    pairs = [(w[::-1], w) for w in WORDS] + [(UNSEEN[::-1], UNSEEN)]
    al = align_language(
        src_vocab, src_vocab.encode_batch(src), en_vocab.encode_batch(en), en_vecs, 8, 1, 1, 1000,
        mono_ids=src_vocab.encode_batch(mono), dictionary=pairs, en_vocab=en_vocab, mix=PROJECTION_ONLY,
        vector_options={"min_n": 2, "max_n": 3}, dictionary_projection=k,
    )
    assert al.report["dictionary_projection"] == k
    return al.vectors


def test_dictionary_projection_reaches_words_the_parallel_text_never_shows(setup):
    """A dictionary word absent from the parallel sentences had no
    co-occurrence projection (its query was zero); with its pair added as a
    one-word sentence pair its query points at its translation."""
    src_vocab, en_vocab, *_, en_vecs = setup
    pieces = [i for i in segment(src_vocab, [UNSEEN[::-1]])[0]]
    assert pieces, "the unseen word must have pieces of its own"
    target = word_vectors(center(en_vecs), segment(en_vocab, [UNSEEN]))[0]
    old = _queries(setup, 0)
    new = _queries(setup, 3)
    q_old = word_vectors(old, [pieces])[0]
    q_new = word_vectors(new, [pieces])[0]
    assert np.abs(q_old).sum() == 0  # before: nothing for a word the parallel text lacks
    assert float(q_new @ target) > 0.8
    # words the parallel text does show keep a query close to their translation
    alpha = word_vectors(new, segment(src_vocab, ["ahpla"]))[0]
    assert float(alpha @ word_vectors(center(en_vecs), segment(en_vocab, ["alpha"]))[0]) > 0.5


def test_adapt_uses_dictionary_projection_by_default(monkeypatch, setup):
    """`mtmeta adapt` passes its dictionary_projection (default: the
    measured 3; --dictionary-projection 0 restores the old queries)."""
    import mtmeta.languages as languages

    src_vocab, en_vocab, src, en, mono, en_vecs = setup
    seen = {}

    def fake_align(*args, **kwargs):
        seen.update(kwargs)
        return SimpleNamespace(vectors=np.zeros((len(src_vocab), 8), np.float32), report={"dictionary_pairs": 0, "precision_at_1": 0.0})

    monkeypatch.setattr(languages, "align_language", fake_align)
    monkeypatch.setattr(languages, "train_vocab", lambda *a, **k: src_vocab)
    monkeypatch.setattr(languages, "adapt_dictionary", lambda *a, **k: [("ahpla", "alpha")])
    added = {}
    embed = SimpleNamespace(
        lang_table={}, tables={}, needs_queries=True, query_dim=8, en_vectors=__import__("torch").from_numpy(en_vecs),
        add_language=lambda lang, n, **kw: added.update(lang=lang, n=n, **kw),
    )
    bundle = SimpleNamespace(model=SimpleNamespace(src_embed=embed), src_vocabs={}, tgt_vocab=en_vocab)
    text = ParallelText("xx", "adapt", "t", src[:50], en[:50])
    languages.add_language(bundle, AdaptConfig(lang="xx"), text, log=lambda *_: None)
    assert AdaptConfig().dictionary_projection == 3
    assert seen["dictionary_projection"] == 3 and added["lang"] == "xx"
    args = build_parser().parse_args(["adapt", "--dictionary-projection", "0"])
    assert getattr(args, "cfg.dictionary_projection") == 0


def test_procrustes_between_spaces_of_different_dimension():
    """Source vectors smaller or larger than the English space map with
    orthonormal rows or columns; equal dimensions give the rotation."""
    g = np.random.default_rng(0)
    y = g.standard_normal((200, 6))
    q, _ = np.linalg.qr(g.standard_normal((6, 6)))
    assert np.allclose(procrustes(y @ q.T, y), q, atol=1e-8)  # a known rotation is recovered
    small = procrustes(g.standard_normal((200, 4)), y)
    assert small.shape == (4, 6) and np.allclose(small @ small.T, np.eye(4), atol=1e-8)
    big = procrustes(g.standard_normal((200, 9)), y)
    assert big.shape == (9, 6) and np.allclose(big.T @ big, np.eye(6), atol=1e-8)


def test_prepare_folders_made_before_dictionary_projection_are_still_reused():
    """PrepareConfig.dictionary_projection at its default (0) leaves the
    fingerprint as it was before the field existed (work/prepared-ulr is
    reused); another value changes it."""
    import dataclasses
    import hashlib
    import json

    from data_prep.config import PrepareConfig, SourceSpec
    from data_prep.prepare import FORMAT_VERSION, fingerprint

    cfg = PrepareConfig(sources=[SourceSpec(type="pack", path="corpus")], ulr_vectors=True)
    texts = [ParallelText("de", "meta-train", "t", ["ein haus"], ["a house"])]

    def before(c):  # the fingerprint of the code before the field, for these settings
        h = hashlib.sha256()
        settings = dataclasses.asdict(c)
        settings.pop("output")
        settings.pop("dictionary_projection")
        h.update(json.dumps([FORMAT_VERSION, settings], sort_keys=True).encode())
        for t in texts:
            h.update(f"{t.lang}\t{t.role}\t{t.name}\t{len(t)}\n".encode())
            for s, e in zip(t.src, t.tgt):
                h.update(s.encode() + b"\t" + e.encode() + b"\n")
        return h.hexdigest()

    assert fingerprint(cfg, texts) == before(cfg)
    assert fingerprint(dataclasses.replace(cfg, dictionary_projection=3), texts) != before(cfg)
