"""Training strategies, pluggable over the one engine (mtmeta/engine.py).

PRETRAIN_STRATEGIES is the one registry of pre-training strategies: a new
strategy is a Strategy subclass with a `name` and a `build` (base.py), added
to the tuple below; `mtmeta train --strategy`, config validation and the
comparison grid read the names from here. Adaptation always fine-tunes
(FineTuneStrategy); training from scratch on an adapt set is
`mtmeta adapt --scratch`."""
from ..errors import ConfigError
from .base import Strategy, select_parameters
from .meta import MetaStrategy
from .supervised import FineTuneStrategy, MultitaskStrategy, SupervisedStrategy, TransferStrategy

PRETRAIN_STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (MultitaskStrategy, TransferStrategy, MetaStrategy)}


def pretrain_strategy(name: str) -> type[Strategy]:
    """The registered strategy `name`, or a one-line ConfigError listing them."""
    if name not in PRETRAIN_STRATEGIES:
        raise ConfigError(
            f"strategy {name!r} unknown ({', '.join(PRETRAIN_STRATEGIES)}; 'scratch' is `mtmeta adapt --scratch`)"
        )
    return PRETRAIN_STRATEGIES[name]


__all__ = [
    "PRETRAIN_STRATEGIES",
    "FineTuneStrategy",
    "MetaStrategy",
    "MultitaskStrategy",
    "Strategy",
    "SupervisedStrategy",
    "TransferStrategy",
    "pretrain_strategy",
    "select_parameters",
]
