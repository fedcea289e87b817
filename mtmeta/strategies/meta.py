"""MetaNMT (Gu et al., EMNLP 2018): meta-learning over language pairs.

One meta-step, for each of `tasks_per_step` sampled tasks (language pairs):
  1. draw two disjoint batches D and D' of that pair;
  2. simulated learning: from theta take k inner steps on D -> theta';
  3. meta-gradient: the loss of theta' on D', differentiated w.r.t. theta.
The engine then applies the averaged meta-gradient with the outer optimiser.

Variants:
  fomaml  first-order: the gradient at theta' is used as theta's (the paper);
  maml    second-order: differentiate through the inner SGD steps
          (torch.func.functional_call; attention on the math SDPA backend,
          the fused CPU kernels have no double backward);
  reptile theta moves toward theta' (gradient := theta - theta') after k >= 2
          inner steps on k fresh batches of the task (k = 1 would be a plain
          SGD step, and a query batch would be drawn and never learned from);
  metasgd learned per-parameter inner learning rates (Li et al. 2017),
          first-order in theta, exact in the learning rates.

Parameter split (paper, with ULR): the inner loop updates the language-
specific delta, A, the encoder and the decoder; the meta-update trains the
encoder, decoder, universal values and A; delta returns to its start after
each meta-step (it is never meta-updated). Without ULR the per-language
tables take delta's place in the inner loop and are meta-updated too, since
nothing else would train them.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..config import MetaConfig
from ..engine import sequence_loss
from ..tasks import TaskSampler
from ..validation import MetaValidator
from .base import Strategy


def parameter_split(model) -> tuple[list[str], list[str]]:
    """(inner names, outer names) following the paper, from the roles the
    source embedding gives its parameters (mtmeta/model/embeddings.py).
    Universal parameters (ULR's values) are meta-updated only; where there
    are universal parameters, the language-specific tables (ULR's delta) are
    inner-only, since the universal part carries what is learned across
    languages; without them the tables are meta-updated too, as nothing else
    would train them. Shared parameters (the specials: EOS, BOS, PAD, UNK,
    and A) take both steps, or nothing would ever train the EOS every
    source ends with."""
    names = [n for n, p in model.named_parameters()]
    roles = model.source_parameter_roles()
    universal = {n for n, role in roles.items() if role == "universal"}
    language = {n for n, role in roles.items() if role == "language"} if universal else set()
    inner = [n for n in names if n not in universal]
    outer = [n for n in names if n not in language]
    return inner, outer


def batch_loss(model, batch, label_smoothing, params=None) -> torch.Tensor:
    """Per-token loss; with `params`, evaluated functionally at those values."""
    if params is None:
        loss, _ = sequence_loss(model, batch, label_smoothing)
    else:
        loss, _ = sequence_loss(_Functional(model, params), batch, label_smoothing)
    return loss / batch["ntokens"]


def inner_optimizer(params, kind: str, lr: float) -> torch.optim.Optimizer:
    """The simulated-learning step's optimizer: a fresh Adam per task, as in
    the paper, or plain SGD. Shared with benchmarks/meta_diagnostics.py so
    the diagnostic measures exactly the step training takes."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.98))
    return torch.optim.SGD(params, lr=lr)


class _Functional:
    """Calls `model` with substituted parameters (torch.func)."""

    def __init__(self, model, params):
        self.model, self.params = model, params

    def __call__(self, **net_input):
        return functional_call(self.model, self.params, args=(), kwargs=net_input, strict=False)


class MetaStrategy(Strategy):
    name = "metanmt"

    @classmethod
    def build(cls, cfg, tasks: dict, model, seed: int) -> "MetaStrategy":
        # MetaNMT samples tasks uniformly by default (temperature -> infinity).
        temperature = math.inf if cfg.meta.task_sampling == "uniform" else cfg.temperature
        return cls(TaskSampler(tasks, temperature, seed), cfg.meta, model)

    @classmethod
    def validator(cls, cfg, default):
        """With meta.meta_valid_lang: meta-validation (fine-tune a copy on that
        language's adapt set, score it on its validation set)."""
        m = cfg.meta
        if not m.meta_valid_lang:
            return default
        return MetaValidator(cfg.data, m.meta_valid_lang, m.meta_valid_steps, m.meta_valid_sentences, cfg.select_metric, cfg.lr, seed=cfg.seed)

    def __init__(self, sampler, cfg: MetaConfig, model):
        super().__init__(sampler, tune="all")
        self.cfg = cfg
        self.inner_names, self.outer_names = parameter_split(model)
        if cfg.variant == "reptile":  # Reptile needs every meta-updated parameter to move in the inner loop
            self.inner_names = sorted(set(self.inner_names) | set(self.outer_names))
        self.inner_lrs = nn.ParameterDict()
        if cfg.variant == "metasgd":
            params = dict(model.named_parameters())
            for n in self.inner_names:
                self.inner_lrs[n.replace(".", "__")] = nn.Parameter(torch.full_like(params[n], cfg.inner_lr))

    def to(self, device) -> "MetaStrategy":
        super().to(device)
        self.inner_lrs.to(device)
        return self

    # --- which parameters the outer optimiser owns -----------------------------------
    def trainable_parameters(self, model) -> list[nn.Parameter]:
        for p in model.parameters():
            p.requires_grad_(True)  # inner-only parameters need gradients too
        params = dict(model.named_parameters())
        return [params[n] for n in self.outer_names] + list(self.inner_lrs.values())

    # --- one meta-step ----------------------------------------------------------------------
    def train_step(self, engine) -> dict:
        model = engine.model
        ls = engine.settings.label_smoothing
        params = dict(model.named_parameters())
        # None until a task reaches the parameter: a language no task sampled keeps grad None,
        # so Adam leaves it alone (as in multitask) instead of moving it on stale momentum.
        meta_grads: dict[str, torch.Tensor | None] = {n: None for n in self.outer_names}
        lr_grads = {k: torch.zeros_like(v) for k, v in self.inner_lrs.items()}
        losses, ntokens = [], 0
        for _ in range(self.cfg.tasks_per_step):
            task = self.sampler.sample()
            if self.cfg.variant == "reptile":
                # Reptile learns from every batch it draws: k inner steps on k batches, no query batch.
                support, query = [task.next_batch() for _ in range(self.cfg.inner_steps)], None
                ntokens += sum(b["ntokens"] for b in support)
            else:
                support = task.next_batch()
                first = task.last_batch
                query = task.next_batch()
                if task.last_batch == first and len(task.batches) > 1:  # an epoch boundary drew it twice
                    query = task.next_batch()
                ntokens += support["ntokens"] * self.cfg.inner_steps + query["ntokens"]
            run = {"fomaml": self._first_order, "reptile": self._reptile, "maml": self._second_order, "metasgd": self._meta_sgd}
            loss, grads, lrg = run[self.cfg.variant](model, params, support, query, ls)
            losses.append(loss)
            for n in self.outer_names:
                g = grads.get(n)
                if g is not None:
                    g = g / self.cfg.tasks_per_step
                    meta_grads[n] = g if meta_grads[n] is None else meta_grads[n] + g
            for k, g in lrg.items():
                lr_grads[k] += g / self.cfg.tasks_per_step
        model.zero_grad(set_to_none=True)
        for n, g in meta_grads.items():
            params[n].grad = g
        for k, g in lr_grads.items():
            self.inner_lrs[k].grad = g
        return {"loss": sum(losses) / len(losses), "ntokens": ntokens}

    def _simulate(self, model, params, support, ls) -> tuple[dict[str, torch.Tensor], float]:
        """k in-place inner steps on `support` (one batch, k times; or a list
        of k batches, one step each); returns the saved theta and the mean
        inner loss."""
        inner = [params[n] for n in self.inner_names]
        saved = {n: params[n].detach().clone() for n in self.inner_names}  # only these move
        opt = inner_optimizer(inner, self.cfg.inner_optimizer, self.cfg.inner_lr)
        batches = support if isinstance(support, list) else [support] * self.cfg.inner_steps
        losses = []
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss = batch_loss(model, batch, ls)
            loss.backward()
            opt.step()
            # The engine runs the whole meta-step in one autocast context, whose cache keeps
            # the bf16 copy of each weight made by the first forward: without this, the next
            # forward would compute the query loss with theta's copies, not theta-prime's.
            torch.clear_autocast_cache()
            losses.append(loss.detach())
        return saved, float(torch.stack(losses).mean())

    @staticmethod
    def _restore(params, saved) -> None:
        with torch.no_grad():
            for n, value in saved.items():
                params[n].copy_(value)
        torch.clear_autocast_cache()  # the next task's forward must see theta, not theta-prime's copies

    def _first_order(self, model, params, support, query, ls):
        saved, _ = self._simulate(model, params, support, ls)
        model.zero_grad(set_to_none=True)
        loss = batch_loss(model, query, ls)
        loss.backward()
        grads = {n: None if params[n].grad is None else params[n].grad.detach().clone() for n in self.outer_names}
        self._restore(params, saved)
        return loss.item(), grads, {}

    def _reptile(self, model, params, support, query, ls):
        saved, loss = self._simulate(model, params, support, ls)
        with torch.no_grad():
            grads = {n: saved[n] - params[n].detach() for n in self.outer_names}
        self._restore(params, saved)
        return loss, grads, {}

    def _second_order(self, model, params, support, query, ls):
        model.zero_grad(set_to_none=True)
        with sdpa_kernel([SDPBackend.MATH]):
            fast = dict(params)
            for _ in range(self.cfg.inner_steps):
                loss_in = batch_loss(model, support, ls, fast)
                inner = [fast[n] for n in self.inner_names]
                grads = torch.autograd.grad(loss_in, inner, create_graph=True, allow_unused=True)
                for n, g in zip(self.inner_names, grads):
                    if g is not None:
                        fast[n] = fast[n] - self.cfg.inner_lr * g
            loss = batch_loss(model, query, ls, fast)
            outer = [params[n] for n in self.outer_names]
            meta = torch.autograd.grad(loss, outer, allow_unused=True)
        return loss.item(), dict(zip(self.outer_names, meta)), {}

    def _meta_sgd(self, model, params, support, query, ls):
        model.zero_grad(set_to_none=True)
        fast = dict(params)
        for _ in range(self.cfg.inner_steps):
            loss_in = batch_loss(model, support, ls, fast)
            inner = [fast[n] for n in self.inner_names]
            grads = torch.autograd.grad(loss_in, inner, allow_unused=True)
            for n, g in zip(self.inner_names, grads):
                if g is not None:
                    fast[n] = fast[n] - self.inner_lrs[n.replace(".", "__")] * g.detach()
        loss = batch_loss(model, query, ls, fast)
        outer = [params[n] for n in self.outer_names]
        lrs = list(self.inner_lrs.values())
        all_grads = torch.autograd.grad(loss, outer + lrs, allow_unused=True)
        meta = dict(zip(self.outer_names, all_grads[: len(outer)]))
        lr_grads = {k: g for k, g in zip(self.inner_lrs.keys(), all_grads[len(outer) :]) if g is not None}
        return loss.item(), meta, lr_grads

    # --- checkpoint state --------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = super().state_dict()
        state["inner_lrs"] = {k: v.detach().clone() for k, v in self.inner_lrs.items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            for k, v in state.get("inner_lrs", {}).items():
                self.inner_lrs[k].copy_(v)

