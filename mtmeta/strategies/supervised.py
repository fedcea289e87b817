"""Plain supervised steps: one batch, one gradient. Multitask training,
transfer from a parent pair, fine-tuning and training from scratch on an
adapt set (`mtmeta adapt --scratch`: fine-tuning from random parameters)
are all this step; they differ only in which tasks feed the sampler and where the
parameters start."""
from __future__ import annotations

from ..engine import sequence_loss
from .base import Strategy


class SupervisedStrategy(Strategy):
    name = "supervised"

    def train_step(self, engine) -> dict:
        batch = self.sampler.sample().next_batch()
        loss, nll = sequence_loss(engine.model, batch, engine.settings.label_smoothing)
        (loss / batch["ntokens"]).backward()
        return {"loss": loss.item() / batch["ntokens"], "nll": nll.item() / batch["ntokens"], "ntokens": batch["ntokens"]}


class MultitaskStrategy(SupervisedStrategy):
    """Joint training on all source pairs, languages sampled by temperature."""

    name = "multitask"


class TransferStrategy(SupervisedStrategy):
    """Zoph-style transfer: pre-train on one high-resource parent pair."""

    name = "transfer"

    @classmethod
    def train_langs(cls, cfg, available: list[str]) -> list[str]:
        return [cfg.parent_lang]


class FineTuneStrategy(SupervisedStrategy):
    """Adaptation to a new language, tuning the parts `tune` names.

    With a `regularizer` (mtmeta.regularizers: L2Prior or EWC) the step
    minimises  loss / ntokens + regularizer.penalty(model): the penalty is
    added unscaled to the per-token loss, so lambda weighs the prior against
    one target token's worth of likelihood whatever the batch size. The
    reported "loss" stays the data term alone (comparable with unregularised
    runs); "penalty" is the regulariser's value."""

    name = "finetune"

    def __init__(self, sampler, tune: str = "all", regularizer=None):
        super().__init__(sampler, tune)
        self.regularizer = regularizer

    def train_step(self, engine) -> dict:
        if self.regularizer is None:
            return super().train_step(engine)
        batch = self.sampler.sample().next_batch()
        loss, nll = sequence_loss(engine.model, batch, engine.settings.label_smoothing)
        penalty = self.regularizer.penalty(engine.model)
        (loss / batch["ntokens"] + penalty).backward()
        return {
            "loss": loss.item() / batch["ntokens"],
            "nll": nll.item() / batch["ntokens"],
            "penalty": penalty.item(),
            "ntokens": batch["ntokens"],
        }
