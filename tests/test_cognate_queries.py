"""Cognate ULR queries (`mtmeta adapt --cognate-queries W`): a new
language's piece spelled exactly like pieces of pre-trained source languages
gets normalize((1-w) q_aligned + w mean of those languages' queries); other
pieces keep their query. Off by default, and then out of compare's
cell-settings hash. A tiny ULR model with two 'source' languages; no training."""
from types import SimpleNamespace

import pytest
import torch

from data_prep.corpus import ParallelText
from data_prep.vocab import N_SPECIAL, train_vocab
from mtmeta.checkpoint import Bundle
from mtmeta.cli import build_parser
from mtmeta.config import AdaptConfig, ModelConfig, load_compare_yaml
from mtmeta.languages import add_language, cognate_queries, source_overlap
from mtmeta.model.transformer import build_model

AA = "militar natiune casa perro gato arbol rio piedra pan leche".split()  # shares most with XX
BB = "militar hund katze baum fluss stein brot milch haus wasser".split()  # shares one word with XX
XX = "militar natiune casa apa caine pisica copac rau piatra lapte".split()
EN = "military nation house water dog cat tree river stone milk".split()


def _text(words, n=200):
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(6)) for i in range(n)]


def _unit(n, dim, g):
    q = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)
    q[:N_SPECIAL] = 0
    return q


@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(0)
    dim = 8
    en_vocab = train_vocab(_text(EN), "en", 40, 1)
    aa, bb = train_vocab(_text(AA), "aa", 40, 1), train_vocab(_text(BB), "bb", 40, 1)
    en_vectors = _unit(len(en_vocab), dim, g)
    key_ids = torch.tensor([i for i, p in enumerate(en_vocab.pieces()) if i >= N_SPECIAL and p.startswith("\u2581")])
    queries = {"aa": _unit(len(aa), dim, g), "bb": _unit(len(bb), dim, g)}
    model = build_model(ModelConfig(embed_dim=16, ffn_dim=16, encoder_layers=1, decoder_layers=1, heads=2, embedding="ulr"),
                        len(en_vocab), {"aa": len(aa), "bb": len(bb)},
                        ulr={"en_vectors": en_vectors, "key_ids": key_ids, "queries": queries})
    bundle = Bundle(model, en_vocab, {"aa": aa, "bb": bb})
    xx = train_vocab(_text(XX), "xx", 40, 1)
    return SimpleNamespace(bundle=bundle, xx=xx, queries=queries, gen=g, dim=dim)


def test_borrowed_pieces_get_the_blend_others_stay(tiny):
    pieces = tiny.xx.pieces()
    aa_idx = {p: i for i, p in enumerate(tiny.bundle.src_vocabs["aa"].pieces())}
    bb_idx = {p: i for i, p in enumerate(tiny.bundle.src_vocabs["bb"].pieces())}
    overlap = source_overlap(tiny.xx, tiny.bundle, "xx")
    assert list(overlap) == ["aa", "bb"] and overlap["aa"] > overlap["bb"] > 0
    mine = _unit(len(pieces), tiny.dim, tiny.gen)
    full, rep = cognate_queries(mine, tiny.xx, tiny.bundle, "xx", 1.0)
    shared = [i for i, p in enumerate(pieces) if i >= N_SPECIAL and p != "\u2581" and (p in aa_idx or p in bb_idx)]
    assert rep["pieces"] == len(shared) > 0 and rep["per_language"]["aa"] <= overlap["aa"]  # the bare '▁' is never borrowed
    m = pieces.index("\u2581militar")  # in both: w=1 gives the normalized mean of the two source queries
    both = tiny.queries["aa"][aa_idx["\u2581militar"]] + tiny.queries["bb"][bb_idx["\u2581militar"]]
    assert torch.allclose(full[m], torch.nn.functional.normalize(both, dim=0), atol=1e-5)
    half, _ = cognate_queries(mine, tiny.xx, tiny.bundle, "xx", 0.5)
    assert torch.allclose(half[m], torch.nn.functional.normalize(mine[m] + full[m], dim=0), atol=1e-5)
    # unshared pieces and specials keep their query; lengths are kept
    changed = set((full != mine).any(1).nonzero().ravel().tolist())
    assert changed == set(shared) and not full[:N_SPECIAL].any()
    assert torch.allclose(full[N_SPECIAL:].norm(dim=1), torch.ones(len(pieces) - N_SPECIAL), atol=1e-5)
    # only the closest language: bb's pieces are not used
    top1, rep1 = cognate_queries(mine, tiny.xx, tiny.bundle, "xx", 1.0, langs=1)
    assert rep1["languages"] == ["aa"] and torch.allclose(top1[m], tiny.queries["aa"][aa_idx["\u2581militar"]], atol=1e-5)
    # count weighting: w_i = w s / (s + count); a piece seen 0 times gets w
    counts = {i: 0 for i in shared}
    counts[m] = 3
    cw, repc = cognate_queries(mine, tiny.xx, tiny.bundle, "xx", 1.0, counts=counts, count_scale=3.0)
    assert torch.allclose(cw[m], half[m], atol=1e-5) and 0.5 < repc["mean_weight"] < 1.0


def test_add_language_applies_the_option(tiny):
    text = ParallelText("xx", "adapt", "tiny", _text(XX), _text(EN))
    logs: list[str] = []
    cfg = AdaptConfig(lang="xx", src_vocab_size=40, random_queries=True, cognate_queries=1.0)
    info = add_language(tiny.bundle, cfg, text, log=logs.append)
    assert info["cognates"]["pieces"] > 0 and any("ULR queries borrowed" in x for x in logs)
    embed, vocab = tiny.bundle.model.src_embed, tiny.bundle.src_vocabs["xx"]
    i = vocab.pieces().index("\u2581militar")
    aa_i = tiny.bundle.src_vocabs["aa"].pieces().index("\u2581militar")
    bb_i = tiny.bundle.src_vocabs["bb"].pieces().index("\u2581militar")
    both = tiny.queries["aa"][aa_i] + tiny.queries["bb"][bb_i]
    assert torch.allclose(embed.queries["xx"].weight[i], torch.nn.functional.normalize(both, dim=0), atol=1e-5)


def test_flag_default_off_and_hash_neutral():
    args = build_parser().parse_args(["adapt", "--cognate-queries", "0.5", "--cognate-langs", "4", "--cognate-count-scale", "3"])
    assert getattr(args, "cfg.cognate_queries") == 0.5 and getattr(args, "cfg.cognate_langs") == 4
    d = AdaptConfig()
    assert (d.cognate_queries, d.cognate_langs, d.cognate_count_scale) == (0.0, 0, 0.0)
    from mtmeta.compare import adapt_settings

    cfg = load_compare_yaml("recipes/compare.yaml")
    keys = adapt_settings(cfg.adapt)
    assert not {"cognate_queries", "cognate_langs", "cognate_count_scale"} & set(keys)  # off: cell hashes unchanged
    cfg.adapt.cognate_queries = 0.5
    assert adapt_settings(cfg.adapt)["cognate_queries"] == 0.5
