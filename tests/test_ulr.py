"""Universal lexical representation: what flows where, and the vector pipeline."""
import numpy as np
import pytest
import torch

from data_prep.vectors import align_to_english, induce_dictionary, procrustes, read_vec, write_vec
from data_prep.vocab import N_SPECIAL, PAD
from mtmeta.config import MODEL_PRESETS, ModelConfig
from mtmeta.errors import DataError
from mtmeta.model import build_model
from mtmeta.model.ulr import UniversalLexicalEmbedding


def make_ulr_model(seed=0, query_dim=8, en_vocab=40, k=20):
    torch.manual_seed(seed)
    g = np.random.default_rng(seed)
    cfg = ModelConfig(**{**MODEL_PRESETS["tiny"].__dict__, "embedding": "ulr", "dropout": 0.0, "attention_dropout": 0.0})
    ulr = {
        "en_vectors": g.standard_normal((en_vocab, query_dim)).astype(np.float32),
        "key_ids": np.arange(N_SPECIAL, N_SPECIAL + k),
        "queries": {"de": g.standard_normal((30, query_dim)).astype(np.float32), "fr": g.standard_normal((25, query_dim)).astype(np.float32)},
    }
    return build_model(cfg, en_vocab, {"de": 30, "fr": 25}, ulr=ulr)


def batch(model):
    emb = model.src_embed
    de = torch.tensor([[5, 6, 7, 2], [8, 9, 2, PAD]]) + torch.tensor([[emb.offset("de")] * 3 + [0], [emb.offset("de")] * 2 + [0, 0]])
    return {"src_tokens": de, "src_lengths": torch.tensor([4, 3]), "prev_output_tokens": torch.tensor([[2, 10, 11], [2, 12, PAD]])}


def test_alpha_is_a_distribution():
    model = make_ulr_model()
    emb = model.src_embed
    ids = torch.arange(N_SPECIAL, emb.num_embeddings)
    alpha = emb.attention(ids)
    assert alpha.shape == (len(ids), emb.num_universal)
    assert torch.allclose(alpha.sum(-1), torch.ones(len(ids)), atol=1e-5)
    assert (alpha >= 0).all()


def test_gradients_reach_learned_parts_not_fixed_vectors():
    model = make_ulr_model()
    emb = model.src_embed
    fixed = {n: b.clone() for n, b in emb.named_buffers()}
    assert {"en_vectors", "key_ids", "queries.de.weight", "queries.fr.weight"} <= set(fixed)
    param_names = {n for n, _ in emb.named_parameters()}
    assert not any(n.startswith("queries") or n == "en_vectors" for n in param_names)
    logits, _ = model(**batch(model))
    logits.logsumexp(-1).sum().backward()
    assert emb.A.grad is not None and emb.A.grad.abs().sum() > 0
    assert emb.values.grad is not None and emb.values.grad.abs().sum() > 0
    assert emb.delta.tables["de"].weight.grad.abs().sum() > 0
    assert emb.delta.tables["fr"].weight.grad is None or emb.delta.tables["fr"].weight.grad.abs().sum() == 0
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    opt.step()
    for n, b in emb.named_buffers():
        assert torch.equal(b, fixed[n]), f"fixed buffer {n} changed"


def test_delta_starts_at_zero_and_a_at_identity():
    emb = make_ulr_model().src_embed
    assert torch.equal(emb.A, torch.eye(emb.query_dim))
    assert all(t.weight.abs().sum() == 0 for t in emb.delta.tables.values())


def test_special_tokens_use_delta_only():
    emb = make_ulr_model().src_embed
    with torch.no_grad():
        emb.delta.specials.weight.normal_()
    ids = torch.tensor([0, 1, 2, 3])
    assert torch.allclose(emb(ids), emb.delta.specials.weight[ids])


def test_folded_tables_give_same_encoder_output():
    model = make_ulr_model()
    with torch.no_grad():  # make delta non-trivial so the fold has to carry it
        for t in model.src_embed.delta.tables.values():
            t.weight.normal_(0, 0.1)
        model.src_embed.A.add_(0.05 * torch.randn_like(model.src_embed.A))
    model.eval()
    b = batch(model)
    live = model.encoder(b["src_tokens"], b["src_lengths"])["encoder_out"][0]
    model.fold_embeddings()
    assert not isinstance(model.src_embed, UniversalLexicalEmbedding)
    folded = model.encoder(b["src_tokens"], b["src_lengths"])["encoder_out"][0]
    assert torch.allclose(live, folded, atol=1e-5)


def test_unique_tokens_computed_once_matches_per_position():
    emb = make_ulr_model().src_embed
    tokens = batch(make_ulr_model())["src_tokens"]
    per_position = emb.universal(tokens.reshape(-1)).reshape(*tokens.shape, -1) + emb.delta(tokens)
    assert torch.allclose(emb(tokens), per_position, atol=1e-6)


def test_procrustes_recovers_a_known_rotation():
    g = np.random.default_rng(3)
    x = g.standard_normal((200, 12))
    q, _ = np.linalg.qr(g.standard_normal((12, 12)))
    y = x @ q
    w = procrustes(x, y)
    assert np.allclose(w, q, atol=1e-6)


def test_alignment_pipeline_recovers_rotation_with_precision():
    g = np.random.default_rng(4)
    n, d = 300, 16
    en = g.standard_normal((n, d)).astype(np.float32)
    q, _ = np.linalg.qr(g.standard_normal((d, d)))
    # source vectors are a rotated (and slightly noisy) copy of English
    src = (en @ q.T + 0.01 * g.standard_normal((n, d))).astype(np.float32)
    dictionary = [(i, i) for i in range(N_SPECIAL, n)]
    result = align_to_english(src, en, dictionary, seed=1)
    assert result.report["precision_at_1"] > 0.95
    assert result.report["precision_at_1_unaligned"] < 0.2


def test_dictionary_induction_finds_cooccurring_pairs():
    # source piece 10+k always occurs with English piece 20+k
    g = np.random.default_rng(5)
    src, tgt = [], []
    for _ in range(200):
        ks = g.choice(8, size=3, replace=False)
        src.append([10 + int(k) for k in ks])
        tgt.append([20 + int(k) for k in g.permutation(ks)])
    pairs = induce_dictionary(src, tgt, 30, 40)
    assert pairs == [(10 + k, 20 + k) for k in range(8)]


def test_vec_file_round_trip(tmp_path):
    words = ["▁Haus", "▁der", "x"]
    vecs = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    path = tmp_path / "de.vec"
    write_vec(path, words, vecs)
    back = read_vec(path)
    assert list(back) == words
    for w, v in zip(words, vecs):
        assert np.allclose(back[w], v, atol=1e-5)


def test_bad_vec_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.vec"
    path.write_text("2 3\nfoo 1 2 3\nbar 1 2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.vec:3"):
        read_vec(path)


def test_emb_tuning_with_ulr_trains_delta_and_a_only():
    from mtmeta.strategies import select_parameters

    model = make_ulr_model()
    chosen = {id(p) for p in select_parameters(model, "emb")}
    emb = model.src_embed
    assert id(emb.A) in chosen and id(emb.values) not in chosen
    assert all(id(t.weight) in chosen for t in emb.delta.tables.values())
    assert not any(id(p) in chosen for p in model.decoder.parameters())
    assert id(emb.values) in {id(p) for p in select_parameters(model, "emb_enc")}
