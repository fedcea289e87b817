"""Regularisers against forgetting the source languages while adapting.

Both are quadratic pulls toward the pre-trained parameters theta* (the
"anchor"), taken when the checkpoint is loaded:

* `L2Prior`: lambda/2 * sum_i (theta_i - theta*_i)^2, the isotropic Gaussian
  prior centred on the pre-trained model (MetaNMT, Gu et al. 2018, sec. 3.2).
* `EWC`: lambda/2 * sum_i F_i (theta_i - theta*_i)^2, elastic weight
  consolidation (Kirkpatrick et al. 2017) with a diagonal Fisher F estimated
  on batches of the source tasks (`estimate_fisher`).

Which parameters are pulled back: those that have an anchor entry *and* are
being tuned (`requires_grad`, as `strategies.base.select_parameters` sets
it). Parameters created for the new language after the anchor was taken
(its embedding table) have no anchor and are never regularised.

Scaling: `penalty(model)` is returned as is, and the fine-tuning step adds
it to the *per-token* training loss (summed loss / target tokens of the
batch), so lambda weighs the prior against one target token's worth of
data likelihood, independent of the batch size.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from .engine import sequence_loss

Tensors = dict[str, torch.Tensor]


def anchor_parameters(model: nn.Module, names: Iterable[str] | None = None) -> Tensors:
    """Detached copies of the model's parameters (all, or those named)."""
    wanted = None if names is None else set(names)
    return {n: p.detach().clone() for n, p in model.named_parameters() if wanted is None or n in wanted}


def tuned_names(model: nn.Module) -> list[str]:
    """Names of the parameters that currently require gradients."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def parameter_distance(model: nn.Module, anchor: Tensors) -> float:
    """Euclidean distance ||theta - theta*|| over the anchored parameters."""
    total = 0.0
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, a in anchor.items():
            p = params.get(name)
            if p is not None and p.shape == a.shape:
                total += float(((p.detach() - a.to(p.device)) ** 2).sum())
    return math.sqrt(total)


class QuadraticPenalty:
    """lambda/2 * sum_i w_i (theta_i - theta*_i)^2 over anchored, tuned
    parameters; w = 1 when `weights` is None."""

    kind = "quadratic"

    def __init__(self, anchor: Tensors, lam: float = 1.0, weights: Tensors | None = None):
        if lam < 0:
            raise ValueError("lambda must be >= 0")
        self.anchor = {n: a.detach() for n, a in anchor.items()}
        self.lam = float(lam)
        self.weights = None
        if weights is not None:
            missing = [n for n in self.anchor if n not in weights]
            if missing:
                raise ValueError(f"no weight (Fisher) for anchored parameter(s) {missing[:3]}")
            for n, a in self.anchor.items():
                if weights[n].shape != a.shape:
                    raise ValueError(f"{n}: weight shape {tuple(weights[n].shape)} != parameter shape {tuple(a.shape)}")
            self.weights = {n: weights[n].detach() for n in self.anchor}

    def regularised(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """The (name, parameter) pairs the penalty covers right now."""
        out = []
        for name, p in model.named_parameters():
            a = self.anchor.get(name)
            if a is None or not p.requires_grad:
                continue
            if p.shape != a.shape:
                raise ValueError(f"{name}: shape {tuple(p.shape)} differs from the anchor's {tuple(a.shape)}")
            out.append((name, p))
        return out

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """A differentiable scalar (zero at the anchor)."""
        total = None
        for name, p in self.regularised(model):
            d2 = (p - self.anchor[name].to(p.device, p.dtype)) ** 2
            if self.weights is not None:
                d2 = d2 * self.weights[name].to(p.device, p.dtype)
            term = d2.sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return 0.5 * self.lam * total

    def describe(self) -> dict:
        return {"kind": self.kind, "lambda": self.lam, "parameters": int(sum(a.numel() for a in self.anchor.values()))}


class L2Prior(QuadraticPenalty):
    """Isotropic Gaussian prior centred on the pre-trained parameters:
    lambda/2 * sum_i (theta_i - theta*_i)^2."""

    kind = "l2"

    def __init__(self, anchor: Tensors, lam: float = 1.0):
        super().__init__(anchor, lam)


class EWC(QuadraticPenalty):
    """Elastic weight consolidation: lambda/2 * sum_i F_i (theta_i - theta*_i)^2.

    `fisher`: name -> diagonal Fisher (from `estimate_fisher`); only named
    parameters are regularised. `anchor`: name -> theta*; by default the
    model's current values of the Fisher's parameters."""

    kind = "ewc"

    def __init__(self, model: nn.Module, fisher: Tensors, anchor: Tensors | None = None, lam: float = 1.0):
        params = dict(model.named_parameters())
        unknown = [n for n in fisher if n not in params]
        if unknown:
            raise ValueError(f"Fisher names parameter(s) the model lacks: {unknown[:3]}")
        if anchor is None:
            anchor = anchor_parameters(model, fisher)
        else:
            anchor = {n: anchor[n] for n in fisher if n in anchor}
        super().__init__(anchor, lam, weights=fisher)
        self.fisher = self.weights

    def describe(self) -> dict:
        f = torch.cat([w.flatten() for w in self.fisher.values()]) if self.fisher else torch.zeros(1)
        return {**super().describe(), "fisher_mean": float(f.mean()), "fisher_max": float(f.max())}


def estimate_fisher(
    model: nn.Module,
    batches: Iterable[dict],
    names: Iterable[str] | None = None,
    normalize: bool = False,
) -> Tensors:
    """Diagonal *empirical* Fisher: F_i = mean over batches of
    (d NLL_b / d theta_i)^2, where NLL_b is the batch's negative
    log-likelihood of the reference translations (no label smoothing) per
    target token, i.e. the gradient of the same per-token loss the training
    steps use. (The references stand in for samples from the model: the
    empirical, not the true, Fisher; squared batch-mean gradients, not
    per-sentence ones, to keep the cost at one backward per batch.)

    The model runs in eval mode (no dropout). `names`: the parameters to
    estimate (default: all); gradients are taken for exactly those, whatever
    their `requires_grad`, which is restored afterwards, and no `.grad` is
    touched. `normalize`: divide by the mean over all estimated entries, so
    the average weight is 1 and lambda is on the same scale as L2Prior's.
    Every entry is >= 0; a parameter no batch reaches gets 0."""
    named = dict(model.named_parameters())
    chosen = list(named) if names is None else [n for n in names if n in named]
    if not chosen:
        raise ValueError("no parameters to estimate the Fisher information of")
    params = [named[n] for n in chosen]
    fisher = {n: torch.zeros_like(named[n], dtype=torch.float32) for n in chosen}
    flags = {n: p.requires_grad for n, p in named.items()}
    was_training = model.training
    count = 0
    try:
        for n, p in named.items():
            p.requires_grad_(n in fisher)
        model.eval()
        with torch.enable_grad():
            for batch in batches:
                if not batch["ntokens"]:
                    continue
                _, nll = sequence_loss(model, batch, 0.0)
                grads = torch.autograd.grad(nll / batch["ntokens"], params, allow_unused=True)
                for n, g in zip(chosen, grads):
                    if g is not None:
                        fisher[n] += g.detach().float() ** 2
                count += 1
    finally:
        for n, p in named.items():
            p.requires_grad_(flags[n])
        model.train(was_training)
    if not count:
        raise ValueError("no batches to estimate the Fisher information on")
    for n in fisher:
        fisher[n] /= count
    if normalize:
        mean = float(sum(f.sum() for f in fisher.values())) / max(1, sum(f.numel() for f in fisher.values()))
        if mean > 0:
            for n in fisher:
                fisher[n] /= mean
    return fisher
