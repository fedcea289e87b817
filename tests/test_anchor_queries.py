"""Dictionary-anchored ULR queries (`mtmeta adapt --anchor-queries`): a new
language's whole-word piece whose dictionary translation is a universal
token gets a query whose attention lands on that token, through the
learned A; variant '+identical' also anchors pieces spelled like one.
Off by default, and then out of compare's cell-settings hash. A tiny ULR
embedding with a non-identity A and random queries; no training."""
from types import SimpleNamespace

import pytest
import torch

from data_prep.corpus import ParallelText
from data_prep.vocab import N_SPECIAL, train_vocab
from mtmeta.checkpoint import Bundle
from mtmeta.cli import build_parser
from mtmeta.config import AdaptConfig, ModelConfig, load_compare_yaml
from mtmeta.errors import ConfigError
from mtmeta.languages import add_language, anchor_queries
from mtmeta.model.transformer import build_model

EN = "house water dog cat tree river stone bread milk Paris".split()
XX = "casa apa caine pisica copac rau piatra paine lapte Paris".split()  # XX[i] translates EN[i]; 'Paris' is spelled alike


@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(0)
    en_text = [" ".join(EN[(i * 7 + j) % len(EN)] for j in range(6)) for i in range(200)]
    xx_text = [" ".join(XX[(i * 7 + j) % len(XX)] for j in range(6)) for i in range(200)]
    en_vocab = train_vocab(en_text, "en", 40, 1)
    xx_vocab = train_vocab(xx_text, "xx", 40, 1)
    en_pieces = en_vocab.pieces()
    dim = 8
    en_vectors = torch.nn.functional.normalize(torch.randn(len(en_vocab), dim, generator=g), dim=-1)
    en_vectors[:N_SPECIAL] = 0
    key_ids = torch.tensor([i for i, p in enumerate(en_pieces) if i >= N_SPECIAL and p.startswith("\u2581")])
    model = build_model(ModelConfig(embed_dim=16, ffn_dim=16, encoder_layers=1, decoder_layers=1, heads=2, embedding="ulr"),
                        len(en_vocab), {}, ulr={"en_vectors": en_vectors, "key_ids": key_ids, "queries": {}})
    embed = model.src_embed
    with torch.no_grad():  # a learned-looking A: far from the identity, well conditioned
        embed.A.copy_(torch.eye(dim) * 0.5 + torch.randn(dim, dim, generator=g) * 0.4)
    return SimpleNamespace(bundle=Bundle(model, en_vocab, {}), en_vocab=en_vocab, xx_vocab=xx_vocab, xx_text=xx_text,
                           en_text=en_text, embed=embed, gen=g)


def _argmax_piece(embed, en_vocab, q: torch.Tensor) -> str:
    att = torch.softmax(q @ embed.A.detach() @ embed.keys.T / embed.tau, -1)
    return en_vocab.pieces()[int(embed.key_ids[int(att.argmax())])]


def test_anchored_piece_attends_to_its_translation(tiny):
    pieces = tiny.xx_vocab.pieces()
    pairs = [(x.lower(), e.lower()) for x, e in zip(XX, EN) if x != "Paris"]
    whole = [x for x in XX if "\u2581" + x in pieces and x != "Paris"]
    assert len(whole) >= 5, "the tiny vocabulary must hold whole-word pieces"
    queries = torch.nn.functional.normalize(torch.randn(len(pieces), 8, generator=tiny.gen), dim=-1)
    queries[:N_SPECIAL] = 0
    new, info = anchor_queries(queries, tiny.xx_vocab, tiny.en_vocab, tiny.embed, pairs)
    assert info["dictionary"] == len(whole) and info["identical"] == 0
    for x in whole:
        i = pieces.index("\u2581" + x)
        assert _argmax_piece(tiny.embed, tiny.en_vocab, new[i]) == "\u2581" + EN[XX.index(x)]
    assert info["target_mass_after"] > 0.9 > info["target_mass_before"]
    # the attention sharpness of the other queries: |q A| is their median
    norms = (new[[pieces.index("\u2581" + x) for x in whole]] @ tiny.embed.A.detach()).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, info["qa_norm"]), atol=1e-3)
    # every other query is kept, specials stay zero
    changed = {pieces[i] for i in (new != queries).any(1).nonzero().ravel().tolist()}
    assert changed == {"\u2581" + x for x in whole}
    assert not new[:N_SPECIAL].any()
    # identical spelling: 'Paris' has no dictionary entry but is an English key
    new2, info2 = anchor_queries(queries, tiny.xx_vocab, tiny.en_vocab, tiny.embed, pairs, identical=True)
    assert "\u2581Paris" in pieces and info2["identical"] >= 1 and info2["dictionary"] == info["dictionary"]
    assert _argmax_piece(tiny.embed, tiny.en_vocab, new2[pieces.index("\u2581Paris")]) == "\u2581Paris"
    again = anchor_queries(queries, tiny.xx_vocab, tiny.en_vocab, tiny.embed, pairs)[0]
    assert torch.allclose(again, new, atol=1e-6)  # the same queries for the same inputs


def test_add_language_applies_the_option_and_needs_a_dictionary(tiny, tmp_path):
    d = tmp_path / "xx-en.txt"
    d.write_text("".join(f"{x.lower()}\t{e.lower()}\n" for x, e in zip(XX, EN)), encoding="utf-8")
    text = ParallelText("xx", "adapt", "tiny", tiny.xx_text, tiny.en_text)
    logs: list[str] = []
    cfg = AdaptConfig(lang="xx", src_vocab_size=40, random_queries=True, dictionary=str(d), anchor_queries="dictionary")
    bundle = Bundle(tiny.bundle.model, tiny.en_vocab, {})
    info = add_language(bundle, cfg, text, log=logs.append)
    assert info["anchors"]["dictionary"] >= 5 and any("anchored on universal tokens" in m for m in logs)
    q = bundle.model.src_embed.queries["xx"].weight
    i = bundle.src_vocabs["xx"].pieces().index("\u2581apa")
    assert _argmax_piece(bundle.model.src_embed, tiny.en_vocab, q[i]) == "\u2581water"
    with pytest.raises(ConfigError, match="needs a dictionary"):
        add_language(bundle, AdaptConfig(lang="yy", src_vocab_size=40, random_queries=True, dictionary="none",
                                         anchor_queries="dictionary"), text, log=logs.append)


def test_flag_default_off_and_hash_neutral():
    args = build_parser().parse_args(["adapt", "--anchor-queries", "dictionary+identical"])
    assert getattr(args, "cfg.anchor_queries") == "dictionary+identical"
    assert AdaptConfig().anchor_queries == "none"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["adapt", "--anchor-queries", "everything"])
    from mtmeta.compare import adapt_settings

    cfg = load_compare_yaml("recipes/compare.yaml")
    assert "anchor_queries" not in adapt_settings(cfg.adapt)  # off: the recipes' cell hashes are unchanged
    cfg.adapt.anchor_queries = "dictionary"
    assert adapt_settings(cfg.adapt)["anchor_queries"] == "dictionary"
