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
    universal = getattr(model.src_embed, "values", None)
    if tune == "emb" and universal is not None:
        # ULR: "emb" tunes the language-specific delta and A only (MetaNMT);
        # the universal values stay shared with every other language.
        chosen = [p for p in chosen if p is not universal]
    chosen_ids = {id(p) for p in chosen}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen_ids)
    return chosen


class Strategy:
    name = "base"

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
