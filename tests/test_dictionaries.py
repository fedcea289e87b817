"""Bilingual dictionaries for the ULR alignment: reading, word->piece rows,
Procrustes on word pairs, reproducible vectors. Small fixture dictionaries
only (never the MUSE files)."""
import random

import numpy as np
import pytest

from data_prep.dictionaries import adapt_dictionary, default_dictionary, group, read_dictionary
from data_prep.vectors import align_language, dictionary_rows, procrustes, train_piece_vectors, word_counts
from data_prep.vocab import N_SPECIAL, train_vocab
from mtmeta.errors import DataError

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo sierra tango".split()


def src_word(w: str) -> str:
    return w[::-1]


@pytest.fixture(scope="module")
def vocabs():
    rng = random.Random(0)
    en = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(400)]
    src = [" ".join(src_word(w) for w in s.split()) for s in en]
    return train_vocab(src, "xx", 60, 1), train_vocab(en, "en", 60, 1), src, en


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_mixed_separators_duplicates_and_several_translations(tmp_path):
    p = write(
        tmp_path,
        "xx-en.txt",
        "haus\thouse\nhaus home\nHaus\tHouse\n\nhaus house\nkatze   cat\nein zwei drei\nhund\t dog\n",
    )
    pairs = read_dictionary(p)
    assert pairs == [("haus", "house"), ("haus", "home"), ("katze", "cat"), ("hund", "dog")]
    assert group(pairs) == {"haus": ["house", "home"], "katze": ["cat"], "hund": ["dog"]}


def test_empty_dictionary_is_a_one_line_error_naming_the_file(tmp_path):
    p = write(tmp_path, "empty.txt", "")
    with pytest.raises(DataError) as e:
        read_dictionary(p)
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg
    with pytest.raises(DataError, match="not found"):
        read_dictionary(tmp_path / "missing.txt")


def test_default_dictionary_sits_beside_the_pack(tmp_path):
    pack = tmp_path / "corpus"
    pack.mkdir()
    assert default_dictionary(pack, "de") == ""
    muse = tmp_path / "dictionaries" / "muse"
    muse.mkdir(parents=True)
    write(muse, "de-en.0-5000.txt", "haus house\n")
    assert default_dictionary(pack, "de") == str(muse / "de-en.0-5000.txt")
    assert adapt_dictionary("none", tmp_path, "de") is None
    assert adapt_dictionary(str(muse / "de-en.0-5000.txt"), tmp_path, "de") == [("haus", "house")]


def test_procrustes_recovers_a_rotation_from_word_pairs(vocabs, tmp_path):
    src_vocab, en_vocab, src_text, en_text = vocabs
    dim = 8
    g = np.random.default_rng(0)
    r, _ = np.linalg.qr(g.standard_normal((dim, dim)))
    ys = g.standard_normal((len(en_vocab), dim)).astype(np.float32)
    xs = g.standard_normal((len(src_vocab), dim)).astype(np.float32)
    # Each source word's pieces are the rotated-back vectors of its English twin's pieces.
    en_index = {p: i for i, p in enumerate(en_vocab.pieces())}
    single = 0
    for w in WORDS:
        s_ids, e_ids = src_vocab.encode(src_word(w)), en_vocab.encode(w)
        if len(s_ids) == len(e_ids) == 1:
            xs[s_ids[0]] = ys[e_ids[0]] @ r.T
            single += 1
    assert single >= dim + 2, "fixture words should be single pieces"
    # Dictionary: tab and space, a duplicate, a second translation, words the text lacks.
    lines = [src_word(w) + ("\t" if i % 2 else " ") + w for i, w in enumerate(WORDS)]
    lines += [f"{src_word(WORDS[0])} {WORDS[0]}", "zzzunseen nothing", f"{src_word(WORDS[1])} neverseen"]
    pairs = read_dictionary(write(tmp_path, "xx-en.txt", "\n".join(lines) + "\n"))
    src_words = word_counts(src_vocab, src_vocab.encode_batch(src_text))
    en_words = word_counts(en_vocab, en_vocab.encode_batch(en_text))
    dx, dy = dictionary_rows(xs, ys, src_vocab, en_vocab, pairs, src_words, en_words)
    assert len(dx) == len(WORDS)  # the unseen source word and the unseen translation are left out
    keep = [i for i, w in enumerate(WORDS) if len(src_vocab.encode(src_word(w))) == len(en_vocab.encode(w)) == 1]
    w = procrustes(dx[keep], dy[keep])
    np.testing.assert_allclose(w, r, atol=1e-4)
    assert en_index  # English pieces exist


def test_align_language_uses_the_dictionary_and_falls_back_to_induced(vocabs):
    src_vocab, en_vocab, src_text, en_text = vocabs
    src_ids, tgt_ids = src_vocab.encode_batch(src_text), en_vocab.encode_batch(en_text)
    g = np.random.default_rng(1)
    en_vecs = g.standard_normal((len(en_vocab), 8)).astype(np.float32)
    en_vecs[:N_SPECIAL] = 0
    pairs = [(src_word(w), w) for w in WORDS]
    common = dict(dim=8, epochs=1, seed=1, max_sentences=400, vector_options={"min_n": 2, "max_n": 3})
    al = align_language(src_vocab, src_ids, tgt_ids, en_vecs, dictionary=pairs, en_vocab=en_vocab, **common)
    assert al.report["seeds"] == "dictionary" and al.report["dictionary_word_pairs_used"] == len(WORDS)
    assert al.vectors.shape == (len(src_vocab), 8)
    assert np.allclose(np.linalg.norm(al.vectors[N_SPECIAL:], axis=1), 1, atol=1e-4)
    fallback = align_language(src_vocab, src_ids, tgt_ids, en_vecs, **common)
    assert fallback.report["seeds"] == "induced"


def test_same_seed_same_vectors(vocabs):
    src_vocab, _, src_text, _ = vocabs
    ids = src_vocab.encode_batch(src_text[:200])
    a = train_piece_vectors(src_vocab, ids, 8, epochs=1, seed=3, max_sentences=200, workers=1)
    b = train_piece_vectors(src_vocab, ids, 8, epochs=1, seed=3, max_sentences=200, workers=1)
    c = train_piece_vectors(src_vocab, ids, 8, epochs=1, seed=4, max_sentences=200, workers=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
