"""Regularisers against forgetting (L2 prior, EWC), their use in adaptation,
the forgetting report and the `adapt` flags that switch them on."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mtmeta.adaptation import adapt
from mtmeta.checkpoint import load_bundle
from mtmeta.cli import main
from mtmeta.data import PairData
from mtmeta.errors import ConfigError
from mtmeta.regularizers import EWC, L2Prior, anchor_parameters, estimate_fisher, parameter_distance
from mtmeta.strategies import FineTuneStrategy
from mtmeta.tasks import Task, TaskSampler

from conftest import MAX_TOKENS, adapt_config, quiet


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


def shift(model: nn.Module, name: str, delta: torch.Tensor) -> None:
    with torch.no_grad():
        dict(model.named_parameters())[name].add_(delta)


# --- the penalties ---------------------------------------------------------------


def test_l2_prior_zero_at_anchor_and_quadratic() -> None:
    net = small_net()
    reg = L2Prior(anchor_parameters(net), lam=3.0)
    assert reg.penalty(net).item() == 0.0
    d = torch.full((4, 3), 0.1)
    shift(net, "0.weight", d)
    p1 = reg.penalty(net).item()
    assert p1 == pytest.approx(0.5 * 3.0 * float((d**2).sum()), rel=1e-5)
    shift(net, "0.weight", d)  # twice as far: four times the penalty
    assert reg.penalty(net).item() == pytest.approx(4 * p1, rel=1e-5)
    # the gradient is lambda * (theta - theta*)
    net.zero_grad()
    reg.penalty(net).backward()
    assert torch.allclose(net[0].weight.grad, 3.0 * 2 * d, atol=1e-6)
    # frozen parameters (not tuned) are not regularised
    net[0].weight.requires_grad_(False)
    assert reg.penalty(net).item() == 0.0


def test_l2_prior_skips_parameters_without_anchor() -> None:
    net = small_net()
    reg = L2Prior(anchor_parameters(net), lam=1.0)
    net.add_module("new", nn.Linear(2, 2))  # like the new language's table
    shift(net, "new.weight", torch.ones(2, 2))
    assert reg.penalty(net).item() == 0.0


def test_ewc_weights_by_fisher() -> None:
    net = small_net()
    fisher = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    fisher["1.weight"] = torch.full((2, 4), 2.0)
    fisher["1.weight"][0] = 0.0  # first row: zero Fisher
    reg = EWC(net, fisher, anchor_parameters(net), lam=5.0)
    assert reg.penalty(net).item() == 0.0
    # a parameter with zero Fisher contributes nothing, however far it moves
    shift(net, "0.weight", torch.full((4, 3), 10.0))
    shift(net, "0.bias", torch.full((4,), 10.0))
    d = torch.zeros(2, 4)
    d[0] = 10.0
    shift(net, "1.weight", d)
    assert reg.penalty(net).item() == 0.0
    # rows with Fisher 2: lambda/2 * 2 * d^2, quadratic in the distance
    d = torch.zeros(2, 4)
    d[1] = 0.5
    shift(net, "1.weight", d)
    p1 = reg.penalty(net).item()
    assert p1 == pytest.approx(0.5 * 5.0 * 2.0 * 4 * 0.25, rel=1e-5)
    shift(net, "1.weight", d)
    assert reg.penalty(net).item() == pytest.approx(4 * p1, rel=1e-5)
    # the default anchor is the model as it stands
    assert EWC(net, fisher, lam=5.0).penalty(net).item() == 0.0


def test_ewc_rejects_mismatched_fisher() -> None:
    net = small_net()
    with pytest.raises(ValueError):
        EWC(net, {"0.weight": torch.ones(2, 2)})
    with pytest.raises(ValueError):
        EWC(net, {"nope": torch.ones(2, 2)})


# --- the Fisher estimate --------------------------------------------------------


def source_batches(prepared: Path, bundle, lang: str, n: int) -> list[dict]:
    data = PairData.load(prepared / "data" / f"{lang}-en" / "train.npz")
    task = Task(lang, data, bundle.src_offset(lang), MAX_TOKENS, bundle.model.cfg.max_positions, 1)
    return [task.next_batch() for _ in range(n)]


def test_estimate_fisher(prepared: Path, tiny_checkpoint: Path) -> None:
    bundle, _ = load_bundle(tiny_checkpoint)
    model = bundle.model
    model.encoder.layers[0].fc1.weight.requires_grad_(False)  # estimated all the same, flag restored
    batches = source_batches(prepared, bundle, "de", 2)
    fisher = estimate_fisher(model, batches)
    names = dict(model.named_parameters())
    assert set(fisher) == set(names)
    for n, f in fisher.items():
        assert f.shape == names[n].shape and bool((f >= 0).all()), n
    # parameters that get gradients from German batches: nonzero
    for n in ("encoder.layers.0.fc1.weight", "decoder.layers.0.fc2.weight", "encoder.embed_tokens.tables.de.weight"):
        assert fisher[n].sum() > 0, n
    # another language's table gets no gradient from German batches
    assert fisher["encoder.embed_tokens.tables.es.weight"].sum() == 0
    # nothing left behind: flags restored, no .grad written, mode restored
    assert not model.encoder.layers[0].fc1.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert model.training
    # only the named parameters; normalised to mean 1
    some = ["decoder.layers.0.fc2.weight", "encoder.embed_tokens.tables.de.weight"]
    norm = estimate_fisher(model, batches, some, normalize=True)
    assert set(norm) == set(some)
    total = sum(float(f.sum()) for f in norm.values()) / sum(f.numel() for f in norm.values())
    assert total == pytest.approx(1.0, rel=1e-4)


def test_finetune_step_adds_penalty_to_per_token_loss(prepared: Path, tiny_checkpoint: Path) -> None:
    bundle, _ = load_bundle(tiny_checkpoint)
    model = bundle.model
    model.eval()  # no dropout: two steps on the same batch give the same data gradient
    anchor = anchor_parameters(model)
    d = torch.full_like(model.decoder.layers[0].fc2.weight, 0.01)
    shift(model, "decoder.layers.0.fc2.weight", d)
    engine = SimpleNamespace(model=model, settings=SimpleNamespace(label_smoothing=0.1))
    grads, stats = [], []
    for reg in (None, L2Prior(anchor, lam=7.0)):
        data = PairData.load(prepared / "data" / "de-en" / "train.npz")
        task = Task("de", data, bundle.src_offset("de"), MAX_TOKENS, model.cfg.max_positions, 1)
        strategy = FineTuneStrategy(TaskSampler({"de": task}, 1.0, 1), tune="all", regularizer=reg)
        strategy.trainable_parameters(model)
        model.zero_grad(set_to_none=True)
        stats.append(strategy.train_step(engine))
        grads.append(model.decoder.layers[0].fc2.weight.grad.clone())
    assert "penalty" not in stats[0]
    assert stats[1]["penalty"] == pytest.approx(0.5 * 7.0 * float((d**2).sum()), rel=1e-4)
    assert stats[1]["loss"] == pytest.approx(stats[0]["loss"], rel=1e-5)  # the reported loss is the data term
    # the penalty's gradient is added unscaled to that of the per-token loss
    assert torch.allclose(grads[1] - grads[0], 7.0 * d, atol=1e-5)


# --- adaptation -------------------------------------------------------------------


def test_adapt_with_ewc_stays_closer_and_reports_forgetting(prepared: Path, tiny_checkpoint: Path, adapted_checkpoint: Path, tmp_path: Path) -> None:
    anchor = anchor_parameters(load_bundle(tiny_checkpoint)[0].model)
    # the same run without a regulariser: the fixture's last checkpoint
    free = parameter_distance(load_bundle(adapted_checkpoint.with_name("last.pt"))[0].model, anchor)
    out = tmp_path / "ewc"
    torch.manual_seed(0)
    cfg = adapt_config(tiny_checkpoint, prepared, out, regularizer="ewc", reg_lambda=1000.0, fisher_batches=3, forgetting_lang="de")
    result = adapt(cfg, log=quiet, progress=False, resume=False)
    assert result["step"] == 6
    pulled = parameter_distance(load_bundle(result["last"])[0].model, anchor)
    assert 0 < pulled < 0.7 * free, (pulled, free)
    reg = result["regularizer"]
    assert reg["kind"] == "ewc" and reg["lambda"] == 1000.0 and reg["fisher_batches"] == 3
    assert reg["source_langs"] == ["de", "es", "fr"]
    assert reg["fisher_mean"] == pytest.approx(1.0, rel=1e-4)
    assert reg["final_distance"] == pytest.approx(pulled, rel=1e-4)
    # every pre-trained parameter is regularised (tune: all), the new language's table is not
    assert reg["parameters"] == sum(a.numel() for a in anchor.values())
    # the forgetting report: returned and written
    report = result["forgetting"]
    assert report["lang"] == "de" and report["sentences"] == 4
    for side in ("before", "after"):
        assert {"bleu", "chrf", "valid_nll"} <= set(report[side]), report[side]
    assert report["after_checkpoint"] == result["best"]
    assert json.loads((out / "forgetting.json").read_text(encoding="utf-8")) == json.loads(json.dumps(report))


def test_adapt_with_l2_stays_closer(prepared: Path, tiny_checkpoint: Path, adapted_checkpoint: Path, tmp_path: Path) -> None:
    anchor = anchor_parameters(load_bundle(tiny_checkpoint)[0].model)
    free = parameter_distance(load_bundle(adapted_checkpoint.with_name("last.pt"))[0].model, anchor)
    torch.manual_seed(0)
    cfg = adapt_config(tiny_checkpoint, prepared, tmp_path / "l2", regularizer="l2", reg_lambda=1000.0, max_steps=4, validate_every=0)
    result = adapt(cfg, log=quiet, progress=False, resume=False)
    assert result["regularizer"]["kind"] == "l2" and "forgetting" not in result
    assert parameter_distance(load_bundle(result["last"])[0].model, anchor) < 0.7 * free


def test_bad_regularizer_and_forgetting_configs(prepared: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    with pytest.raises(ConfigError, match="checkpoint"):
        adapt(adapt_config("", prepared, out, regularizer="ewc", reg_lambda=1.0), log=quiet, progress=False)
    with pytest.raises(ConfigError, match="reg_lambda"):
        adapt(adapt_config(tiny_checkpoint, prepared, out, regularizer="l2", reg_lambda=0.0), log=quiet, progress=False)
    with pytest.raises(ConfigError, match="fisher_batches"):
        adapt(adapt_config(tiny_checkpoint, prepared, out, regularizer="ewc", reg_lambda=1.0, fisher_batches=0), log=quiet, progress=False)
    with pytest.raises(ConfigError, match="regularizer"):
        adapt(adapt_config(tiny_checkpoint, prepared, out, regularizer="lasso", reg_lambda=1.0), log=quiet, progress=False)
    # unknown to the model; the language being adapted; not a language code
    for lang, words in (("it", "not a source language"), ("ro", "not a source language"), ("German", "language code")):
        with pytest.raises(ConfigError, match=words):
            adapt(adapt_config(tiny_checkpoint, prepared, out, forgetting_lang=lang), log=quiet, progress=False)
    with pytest.raises(ConfigError, match="checkpoint"):
        adapt(adapt_config("", prepared, out, forgetting_lang="de"), log=quiet, progress=False)
    # known language, but no held-out data in the prepared folder
    copy = tmp_path / "prepared"
    shutil.copytree(prepared, copy)
    (copy / "data" / "de-en" / "valid.npz").unlink()
    with pytest.raises(ConfigError, match="held-out"):
        adapt(adapt_config(tiny_checkpoint, copy, out, forgetting_lang="de"), log=quiet, progress=False)
    # EWC needs the source languages' training data
    for d in ("de", "es", "fr"):
        (copy / "data" / f"{d}-en" / "train.npz").unlink()
    with pytest.raises(ConfigError, match="training data"):
        adapt(adapt_config(tiny_checkpoint, copy, out, regularizer="ewc", reg_lambda=1.0), log=quiet, progress=False)
    assert not (out / "best.pt").exists()


# --- the command line -------------------------------------------------------------


def test_adapt_flags(capsys, prepared: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    common = ["-q", "adapt", "--checkpoint", str(tiny_checkpoint), "--lang", "ro", "--data", str(prepared),
              "--output", str(out), "--max-steps", "2", "--validate-every", "0", "--max-tokens", str(MAX_TOKENS)]
    code = main([*common, "--regularizer", "ewc", "--reg-lambda", "10", "--fisher-batches", "2", "--forgetting-lang", "es"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(stdout)
    assert result["regularizer"]["kind"] == "ewc" and result["regularizer"]["fisher_batches"] == 2
    assert result["forgetting"]["lang"] == "es" and (out / "forgetting.json").is_file()
    _, state = load_bundle(result["best"])
    assert state["run_config"]["regularizer"] == "ewc" and state["run_config"]["reg_lambda"] == 10.0
    code = main([*common, "--restart", "--forgetting-lang", "it"])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("mtmeta: error: ") and "'it'" in err and len(err.strip().split("\n")) == 1
    code = main([*common, "--restart", "--regularizer", "l2"])  # no lambda
    _, err = capsys.readouterr()
    assert code == 2 and "reg_lambda" in err
