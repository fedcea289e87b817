"""MetaNMT: meta-gradients of each variant, and a tiny end-to-end run."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import MAX_TOKENS, quiet, train_config
from mtmeta import config as C
from mtmeta.data import PairData
from mtmeta.model import build_model
from mtmeta.strategies.meta import MetaStrategy, batch_loss, parameter_split
from mtmeta.tasks import Task, TaskSampler


def tiny(dtype=torch.float32, ulr=False):
    torch.manual_seed(0)
    cfg = dataclasses.replace(C.MODEL_PRESETS["tiny"], dropout=0.0, attention_dropout=0.0, embed_dim=16, ffn_dim=16, heads=2)
    vectors = None
    if ulr:
        cfg = dataclasses.replace(cfg, embedding="ulr")
        g = np.random.default_rng(0)
        vectors = {"en_vectors": g.standard_normal((30, 4)), "key_ids": np.arange(4, 14), "queries": {"de": g.standard_normal((20, 4))}}
    model = build_model(cfg, 30, {"de": 20}, ulr=vectors).to(dtype)
    g = np.random.default_rng(1)
    src = [g.integers(4, 20, size=g.integers(3, 7)).tolist() for _ in range(16)]
    tgt = [g.integers(4, 30, size=g.integers(3, 7)).tolist() for _ in range(16)]
    task = Task("de", PairData.from_lists(src, tgt), model.src_embed.offset("de"), 60, 64, seed=3)
    return model, task


def engine_for(model):
    return SimpleNamespace(model=model, settings=SimpleNamespace(label_smoothing=0.0))


def strategy(model, task, **meta):
    cfg = C.MetaConfig(**{"inner_lr": 0.1, "inner_optimizer": "sgd", **meta})
    return MetaStrategy(TaskSampler({"de": task}, 1.0, seed=0), cfg, model)


def test_first_order_meta_gradient_is_the_plain_gradient_at_theta_prime():
    model, task = tiny()
    s = strategy(model, task, variant="fomaml")
    s.trainable_parameters(model)
    support, query = copy.deepcopy(task).next_batch(), None
    probe = copy.deepcopy(task)
    support, query = probe.next_batch(), probe.next_batch()
    # by hand: one SGD step on D, then the gradient on D'
    ref = copy.deepcopy(model)
    batch_loss(ref, support, 0.0).backward()
    with torch.no_grad():
        for p in ref.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    ref.zero_grad()
    batch_loss(ref, query, 0.0).backward()
    expected = {n: p.grad for n, p in ref.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    s.train_step(engine_for(model))
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), f"{n}: parameters must be restored after simulated learning"
        if expected[n] is None:
            assert p.grad is None or p.grad.abs().sum() == 0
        else:
            assert torch.allclose(p.grad, expected[n], atol=1e-6), n


def test_second_order_meta_gradient_matches_finite_differences():
    model, task = tiny(torch.float64)
    s = strategy(model, task, variant="maml")
    s.trainable_parameters(model)
    probe = copy.deepcopy(task)
    support, query = probe.next_batch(), probe.next_batch()
    s.train_step(engine_for(model))
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    def meta_loss(m):
        params = dict(m.named_parameters())
        inner = batch_loss(m, support, 0.0)
        g = torch.autograd.grad(inner, list(params.values()), allow_unused=True)
        fast = {n: p - 0.1 * gi if gi is not None else p for (n, p), gi in zip(params.items(), g)}
        return batch_loss(m, query, 0.0, fast).item()

    torch.manual_seed(5)
    direction = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    eps = 1e-5
    shifted = []
    for sign in (1, -1):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in m.named_parameters():
                p += sign * eps * direction[n]
        shifted.append(meta_loss(m))
    numeric = (shifted[0] - shifted[1]) / (2 * eps)
    analytic = sum((grads[n] * direction[n]).sum().item() for n in grads)
    assert abs(numeric - analytic) < 1e-4 * max(1.0, abs(numeric)), (numeric, analytic)
    # and it differs from the first-order approximation
    fo_model, fo_task = tiny(torch.float64)
    fo = strategy(fo_model, fo_task, variant="fomaml")
    fo.trainable_parameters(fo_model)
    fo.train_step(engine_for(fo_model))
    first_order = sum((p.grad * direction[n]).sum().item() for n, p in fo_model.named_parameters() if p.grad is not None)
    assert abs(first_order - analytic) > 1e-6


def test_reptile_moves_theta_toward_theta_prime():
    model, task = tiny()
    s = strategy(model, task, variant="reptile", inner_steps=3)
    outer = s.trainable_parameters(model)
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    probe = copy.deepcopy(task)
    batches = [probe.next_batch() for _ in range(3)]  # one inner step on each of k fresh batches
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for batch in batches:
        opt.zero_grad()
        batch_loss(ref, batch, 0.0).backward()
        opt.step()
    theta_prime = {n: p.detach() for n, p in ref.named_parameters()}
    s.train_step(engine_for(model))
    torch.optim.SGD(outer, lr=0.5).step()
    for n, p in model.named_parameters():
        if not torch.equal(theta[n], theta_prime[n]):
            assert torch.allclose(p.detach(), theta[n] + 0.5 * (theta_prime[n] - theta[n]), atol=1e-6), n


def test_meta_sgd_learning_rates_receive_gradients_and_are_trained():
    model, task = tiny()
    s = strategy(model, task, variant="metasgd")
    params = s.trainable_parameters(model)
    assert any(p is lr for p in params for lr in s.inner_lrs.values())
    s.train_step(engine_for(model))
    nonzero = [k for k, v in s.inner_lrs.items() if v.grad is not None and v.grad.abs().sum() > 0]
    assert len(nonzero) > len(s.inner_lrs) // 2


def test_ulr_parameter_split_follows_the_paper():
    model, _ = tiny(ulr=True)
    inner, outer = parameter_split(model)
    # language-specific delta tables: inner only; the shared specials: both steps
    assert any(".delta.tables." in n for n in inner) and not any(".delta.tables." in n for n in outer)
    assert all(any(n.endswith("delta.specials.weight") for n in side) for side in (inner, outer))
    assert any(n.endswith("embed_tokens.values") for n in outer) and not any(n.endswith("embed_tokens.values") for n in inner)
    assert any(n.endswith("embed_tokens.A") for n in inner) and any(n.endswith("embed_tokens.A") for n in outer)
    assert any(n.startswith("encoder.layers") for n in inner) and any(n.startswith("decoder.layers") for n in outer)


def test_parameter_split_follows_the_embeddings_roles_not_names():
    """The split reads the roles the source embedding declares: every source
    embedding parameter has one, and the split is exactly what the roles say."""
    for ulr in (False, True):
        model, _ = tiny(ulr=ulr)
        roles = model.source_parameter_roles()
        src_names = {n for n, _ in model.named_parameters() if n.startswith("encoder.embed_tokens.")}
        assert set(roles) == src_names and set(roles.values()) <= {"language", "universal", "shared"}
        inner, outer = parameter_split(model)
        universal = {n for n, r in roles.items() if r == "universal"}
        language = {n for n, r in roles.items() if r == "language"}
        assert not universal & set(inner)
        assert (language & set(outer)) == (set() if universal else language)
        assert bool(universal) == ulr


def test_delta_is_reset_after_each_meta_step():
    model, task = tiny(ulr=True)
    s = strategy(model, task, variant="fomaml")
    s.trainable_parameters(model)
    s.train_step(engine_for(model))
    assert all(t.weight.abs().sum() == 0 for t in model.src_embed.delta.tables.values())


@pytest.mark.parametrize("variant", ["fomaml", "maml", "reptile", "metasgd"])
def test_meta_training_end_to_end_then_adapt_and_translate(variant, prepared: Path, tmp_path: Path):
    from mtmeta.adaptation import adapt
    from mtmeta.checkpoint import load_bundle, read_checkpoint
    from mtmeta.decoding import translate
    from mtmeta.training import train

    cfg = train_config(prepared, tmp_path / "meta", strategy="metanmt", max_steps=3, validate_every=3, max_tokens=MAX_TOKENS // 2)
    cfg.meta = C.MetaConfig(variant=variant, inner_optimizer="sgd" if variant in ("maml", "metasgd") else "adam", tasks_per_step=2)
    result = train(cfg, log=quiet, progress=False)
    assert result["step"] == 3
    # the meta-updates changed the model: held-out loss at step 3 is not the loss at step 0
    history = read_checkpoint(result["last"])["history"]
    assert [h["step"] for h in history] == [0, 3] and history[0]["valid_nll"] != history[1]["valid_nll"]
    pretrained, _ = load_bundle(result["best"])
    before = {n: p.detach().clone() for n, p in pretrained.model.named_parameters()}

    def moved(after: dict, prefix: str) -> bool:
        names = [n for n in before if n.startswith(prefix)]
        assert names, prefix
        return any(not torch.equal(before[n], after[n]) for n in names)

    # each adaptation option tunes what it says and leaves the rest exactly as pre-trained
    expect = {"all": (True, True), "emb_enc": (True, False), "emb": (False, False)}
    for tune, (encoder_moves, decoder_moves) in expect.items():
        out = tmp_path / f"adapt-{tune}"
        ad = C.AdaptConfig(
            checkpoint=result["best"], lang="ro", data=str(prepared), output=str(out), tune=tune, src_vocab_size=200,
            max_steps=2, validate_every=2, bleu_sentences=4, max_tokens=MAX_TOKENS, patience=0, lr=1e-2, warmup_steps=1,
        )
        adapted = adapt(ad, log=quiet, progress=False)
        bundle, _ = load_bundle(adapted["last"])  # after the 2 steps (best may be the start)
        after = {n: p.detach() for n, p in bundle.model.named_parameters()}
        assert moved(after, "encoder.layers.") == encoder_moves, tune
        assert moved(after, "decoder.") == decoder_moves, tune
        assert "encoder.embed_tokens.tables.ro.weight" in after
        hyps = translate(bundle, "ro", ["Bună ziua.", "Mulțumesc."], beam=2)
        assert len(hyps) == 2 and all(isinstance(h, str) for h in hyps)
        assert translate(bundle, "ro", ["Bună ziua.", "Mulțumesc."], beam=2) == hyps  # deterministic


def test_meta_validation_scores_a_fine_tuned_copy(prepared: Path, tmp_path: Path):
    from mtmeta.training import train

    cfg = train_config(prepared, tmp_path / "meta-valid", strategy="metanmt", max_steps=2, validate_every=2)
    cfg.meta = C.MetaConfig(meta_valid_lang="ro", meta_valid_steps=2, meta_valid_sentences=4)
    result = train(cfg, log=quiet, progress=False)
    log = (tmp_path / "meta-valid" / "train_log.jsonl").read_text()
    assert '"meta_valid_lang": "ro"' in log and "meta_chrf" in log
    assert result["step"] == 2


def _inner_step_move(variant: str, ulr: bool, **meta) -> float:
    """||theta' - theta|| / ||theta|| over the inner parameters after the
    simulated-learning step the strategy takes with this MetaConfig."""
    model, task = tiny(ulr=ulr)
    cfg = C.MetaConfig(variant=variant, **meta)
    cfg.validate()
    s = MetaStrategy(TaskSampler({"de": task}, 1.0, seed=0), cfg, model)
    s.trainable_parameters(model)
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in s.inner_names}
    batch = task.next_batch()
    s._simulate(model, params, [batch] * cfg.inner_steps if variant == "reptile" else batch, 0.1)
    moved = sum(((params[n].detach() - before[n]) ** 2).sum() for n in s.inner_names).sqrt()
    return float(moved / sum((before[n] ** 2).sum() for n in s.inner_names).sqrt())


@pytest.mark.parametrize("ulr", [False, True])
def test_inner_step_defaults_move_theta(ulr):
    """The inner step each variant takes by default moves theta measurably: SGD
    at 1e-3 (the old default) left theta' == theta on real batches
    (results/archive/compare-3.5min-pretraining/meta_inner_step.json) and FOMAML became multitask. Run
    the step, measure it; the old setting stays below the bar, so the bar
    tells them apart."""
    bar = 2e-4
    for variant in ("fomaml", "reptile", "maml", "metasgd"):
        assert _inner_step_move(variant, ulr) > bar, variant
    assert _inner_step_move("fomaml", ulr, inner_optimizer="sgd", inner_lr=1e-3) < bar
    with pytest.raises(C.ConfigError, match="plain SGD"):
        C.MetaConfig(variant="maml", inner_optimizer="adam").validate()


def test_reptile_defaults_to_two_inner_steps_and_refuses_one():
    assert C.MetaConfig(variant="reptile").inner_steps == 2
    assert C.MetaConfig(variant="fomaml").inner_steps == 1
    with pytest.raises(C.ConfigError, match="reptile needs inner_steps >= 2"):
        C.MetaConfig(variant="reptile", inner_steps=1).validate()


def test_ulr_special_tokens_are_meta_updated():
    """The EOS every source ends with has a zero universal part under ULR: if
    the meta-update skipped delta.specials, MetaNMT would never learn it."""
    model, task = tiny(ulr=True)
    inner, outer = parameter_split(model)
    specials = [n for n in outer if n.endswith("delta.specials.weight")]
    assert specials, outer
    assert not any(".delta.tables." in n for n in outer)
    s = strategy(model, task, variant="fomaml")
    s.trainable_parameters(model)
    s.train_step(engine_for(model))
    grad = dict(model.named_parameters())[specials[0]].grad
    assert grad is not None and grad[2].abs().sum() > 0  # EOS (id 2) row


def test_fomaml_leaves_unsampled_languages_without_gradient():
    """Tables of a language no task sampled must have grad None (Adam skips
    them, as in multitask), not zero (Adam would move them on old momentum)."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(C.MODEL_PRESETS["tiny"], embed_dim=16, ffn_dim=16, heads=2)
    model = build_model(cfg, 30, {"de": 20, "fr": 20})
    g = np.random.default_rng(1)
    pairs = lambda: PairData.from_lists(  # noqa: E731
        [g.integers(4, 20, size=5).tolist() for _ in range(8)], [g.integers(4, 30, size=5).tolist() for _ in range(8)]
    )
    tasks = {lang: Task(lang, pairs(), model.src_embed.offset(lang), 60, 64, seed=3) for lang in ("de", "fr")}
    sampler = TaskSampler(tasks, 1.0, seed=0)
    s = MetaStrategy(sampler, C.MetaConfig(variant="fomaml"), model)
    s.trainable_parameters(model)
    sampled = TaskSampler(tasks, 1.0, seed=0).sample().lang
    other = "fr" if sampled == "de" else "de"
    s.train_step(engine_for(model))
    tables = model.src_embed.tables
    assert tables[sampled].weight.grad is not None
    assert tables[other].weight.grad is None


@pytest.mark.parametrize("variant", ["fomaml", "reptile"])
def test_meta_step_under_one_bf16_autocast_sees_theta_prime(variant, monkeypatch):
    """The engine wraps a whole meta-step in one autocast context, and autocast
    caches each weight's bf16 copy until the context exits: the query loss (and
    Reptile's second inner step) must still be computed with theta-prime's
    weights. Reference: every forward in a context of its own."""
    import mtmeta.strategies.meta as meta

    def run(own_context: bool):
        model, task = tiny(ulr=True)
        s = strategy(model, task, variant=variant, inner_optimizer="adam", inner_lr=1e-2,
                     inner_steps=2 if variant == "reptile" else 1, tasks_per_step=2)
        s.trainable_parameters(model)
        if own_context:
            def each_in_own_context(*a, **k):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return batch_loss(*a, **k)
            monkeypatch.setattr(meta, "batch_loss", each_in_own_context)
            stats = s.train_step(engine_for(model))
            monkeypatch.setattr(meta, "batch_loss", batch_loss)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                stats = s.train_step(engine_for(model))
        return stats["loss"], {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    loss, grads = run(own_context=False)
    ref_loss, ref_grads = run(own_context=True)
    assert loss == ref_loss
    assert grads.keys() == ref_grads.keys() and grads
    for n in grads:
        assert torch.equal(grads[n], ref_grads[n]), n


def test_support_and_query_are_different_batches_across_an_epoch_boundary():
    """D and D' are drawn in turn from the task's shuffled stream; when a new
    epoch starts with the batch the last one ended with, D' is drawn again."""
    model, task = tiny()
    task = Task("de", task.data, task.src_offset, 20, 64, seed=3)  # smaller batches: an odd count >= 3
    n = len(task.batches)
    assert n >= 3 and n % 2 == 1, n
    task._permutation = lambda: np.arange(n) if task.epoch == 0 else np.roll(np.arange(n), 1)  # epoch 1 starts with n-1
    task._order = task._permutation()
    drawn = []
    original = task.next_batch

    def recording():
        batch = original()
        drawn.append(task.last_batch)
        return batch

    task.next_batch = recording
    s = strategy(model, task, variant="fomaml")
    s.trainable_parameters(model)
    pairs = []
    for _ in range(n):
        drawn.clear()
        s.train_step(engine_for(model))
        pairs.append((drawn[0], drawn[-1]))
    assert all(a != b for a, b in pairs), pairs
    assert any(len(set(p)) == 2 and p[0] == n - 1 for p in pairs)  # the boundary case occurred
