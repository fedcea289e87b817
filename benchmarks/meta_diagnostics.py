"""How much does MetaNMT's simulated learning step actually move the model?

For a checkpoint and a few source tasks: draw D and D' of one pair, take the
recipe's inner step on D (theta -> theta'), and report the relative parameter
change, the change of the D' loss, and the cosine between the D' gradients at
theta and at theta'. If the inner step barely changes anything, a first-order
meta-gradient is the ordinary gradient on D' and MetaNMT reduces to
multitask training with uniform task sampling and half the updates.

    python -m benchmarks.meta_diagnostics --checkpoint work/compare/pretrain/metanmt/best.pt \
        --data work/prepared-ulr --inner sgd:0.001 adam:0.0001 sgd:0.1 --out results/archive/compare-3.5min-pretraining/meta_inner_step.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from mtmeta.checkpoint import load_bundle
from mtmeta.data import PairData
from mtmeta.strategies.meta import batch_loss, inner_optimizer, parameter_split
from mtmeta.tasks import Task


def _flat_grad(model, names, loss) -> torch.Tensor:
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(params[n])).reshape(-1) for n, g in zip(names, grads)])


def inner_step_effect(model, names, support, query, optimizer: str, lr: float, ls: float = 0.1) -> dict:
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in names}
    g_before = _flat_grad(model, names, batch_loss(model, query, ls))
    with torch.no_grad():
        q_before = batch_loss(model, query, ls).item()
    inner = [params[n] for n in names]
    opt = inner_optimizer(inner, optimizer, lr)
    model.zero_grad(set_to_none=True)
    batch_loss(model, support, ls).backward()
    opt.step()
    with torch.no_grad():
        moved = math.sqrt(sum(float((params[n] - saved[n]).pow(2).sum()) for n in names))
        norm = math.sqrt(sum(float(saved[n].pow(2).sum()) for n in names))
        q_after = batch_loss(model, query, ls).item()
    g_after = _flat_grad(model, names, batch_loss(model, query, ls))
    with torch.no_grad():
        for n in names:
            params[n].copy_(saved[n])
    return {
        "relative_step": moved / norm,
        "query_loss_before": q_before,
        "query_loss_after": q_after,
        "query_loss_change": q_after - q_before,
        "grad_cosine_theta_vs_theta_prime": float(torch.nn.functional.cosine_similarity(g_before, g_after, dim=0)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--langs", nargs="+", default=["de", "fr", "cs", "et", "ru", "sk"])
    ap.add_argument("--inner", nargs="+", default=["sgd:0.001"], help="optimizer:lr, e.g. sgd:0.001 adam:0.0001")
    ap.add_argument("--max-tokens", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    bundle, _ = load_bundle(args.checkpoint)
    model = bundle.model
    model.eval()  # no dropout: the measured change is the inner step's alone
    names, _ = parameter_split(model)
    results = {"checkpoint": args.checkpoint, "settings": {}}
    for spec in args.inner:
        opt, lr = spec.split(":")
        rows = {}
        for lang in args.langs:
            data = PairData.load(Path(args.data) / "data" / f"{lang}-en" / "train.npz")
            task = Task(lang, data, bundle.src_offset(lang), args.max_tokens, model.cfg.max_positions, args.seed)
            rows[lang] = inner_step_effect(model, names, task.next_batch(), task.next_batch(), opt, float(lr))
        mean = {k: sum(r[k] for r in rows.values()) / len(rows) for k in next(iter(rows.values()))}
        results["settings"][spec] = {"per_language": rows, "mean": mean}
        print(f"{spec}: " + ", ".join(f"{k} {v:.3g}" for k, v in mean.items()), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
