"""What a training strategy is: the piece that turns the engine's state into
one step's gradients. Strategies never own a loop, an optimiser or a
checkpoint; the engine does."""
from __future__ import annotations

from torch import nn

from ..tasks import TaskSampler


def select_parameters(model, tune: str) -> list[nn.Parameter]:
    """all: everything; emb_enc: source embeddings + encoder (decoder frozen);
    emb: source embeddings only (with ULR: delta and A)."""
    groups = model.parameter_groups()
    names = {"all": ("src_embed", "encoder", "decoder"), "emb_enc": ("src_embed", "encoder"), "emb": ("src_embed",)}[tune]
    chosen = [p for name in names for p in groups[name]]
    if tune == "emb":
        # "emb" leaves the embedding's universal parameters alone (ULR: it tunes the
        # language-specific delta and A only, as MetaNMT does); they stay shared
        # with every other language.
        params = dict(model.named_parameters())
        universal = {id(params[n]) for n, role in model.source_parameter_roles().items() if role == "universal"}
        chosen = [p for p in chosen if id(p) not in universal]
    chosen_ids = {id(p) for p in chosen}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen_ids)
    return chosen


class Strategy:
    """A pre-training strategy registers itself by name in
    mtmeta/strategies/__init__.py (PRETRAIN_STRATEGIES) and says how it is
    built from a TrainConfig: `build`, and optionally its own validator."""

    name = "base"

    @classmethod
    def build(cls, cfg, tasks: dict, model, seed: int) -> "Strategy":
        """From a TrainConfig, the training tasks by language and the model."""
        return cls(TaskSampler(tasks, cfg.temperature, seed))

    @classmethod
    def train_langs(cls, cfg, available: list[str]) -> list[str]:
        """The source languages it trains on: the config's, else every prepared one."""
        return cfg.langs or available

    @classmethod
    def validator(cls, cfg, default):
        """What picks checkpoints: the engine's `default` validator unless the
        strategy has its own."""
        return default

    def __init__(self, sampler: TaskSampler, tune: str = "all"):
        self.sampler = sampler
        self.tune = tune

    def trainable_parameters(self, model) -> list[nn.Parameter]:
        return select_parameters(model, self.tune)

    def to(self, device) -> "Strategy":
        """Batches (and any state of the strategy's own) on `device`."""
        self.sampler.to(device)
        return self

    def train_step(self, engine) -> dict:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
