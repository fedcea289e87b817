"""Training strategies, pluggable over the one engine (mtmeta/engine.py)."""
from .base import Strategy, select_parameters
from .supervised import FineTuneStrategy, MultitaskStrategy, ScratchStrategy, SupervisedStrategy, TransferStrategy

PRETRAIN_STRATEGIES = {"multitask": MultitaskStrategy, "transfer": TransferStrategy, "scratch": ScratchStrategy}

__all__ = [
    "PRETRAIN_STRATEGIES",
    "FineTuneStrategy",
    "MultitaskStrategy",
    "ScratchStrategy",
    "Strategy",
    "SupervisedStrategy",
    "TransferStrategy",
    "select_parameters",
]
