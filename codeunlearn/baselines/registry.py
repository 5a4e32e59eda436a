"""The gradient baselines by name, and the one entry point that runs any of them.

`BaselineConfig.method` picks a method here; its valid names are `GRADIENT_METHODS` in the config (so
a config is checked without torch), and a test checks the two agree. A new method is one module with
one `Method` subclass, one line in `BASELINE_METHODS`, and its name in `GRADIENT_METHODS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from torch import nn

from codeunlearn.baselines.base import BaselineResult, Method
from codeunlearn.baselines.ga import GradientAscent
from codeunlearn.baselines.graddiff import GradDiff
from codeunlearn.baselines.npo import NPO
from codeunlearn.baselines.rmu import RMU
from codeunlearn.core.config import BaselineConfig
from codeunlearn.core.errors import ConfigError
from codeunlearn.data.batching import Batch

BASELINE_METHODS: Mapping[str, Method] = MappingProxyType(
    {
        "ga": GradientAscent(),
        "graddiff": GradDiff(),
        "npo": NPO(),
        "rmu": RMU(),
    }
)
"""Every gradient baseline by name (read-only)."""


def method_names() -> list[str]:
    """Every baseline `unlearn_with_gradients` can run, sorted."""
    return sorted(BASELINE_METHODS)


def get_method(name: str) -> Method:
    """The method registered as `name`.

    Raises:
        ConfigError: an unregistered name, listing the registered ones.
    """
    if name not in BASELINE_METHODS:
        raise ConfigError(
            f"baseline method {name!r} is not registered: use one of {', '.join(method_names())}"
        )
    return BASELINE_METHODS[name]


def reads_retain(config: BaselineConfig) -> bool:
    """Whether a run of `config` trains on retain batches: RMU always (its retain term holds retain
    activations), GradDiff and NPO+RT while retain_coef > 0, GA never.

    Raises:
        ConfigError: a method that is not registered (validate the config first).
    """
    return get_method(config.method).reads_retain(config)


def unlearn_with_gradients(
    model: nn.Module, forget_batches: Sequence[Batch], retain_batches: Sequence[Batch], config: BaselineConfig
) -> BaselineResult:
    """Fine-tune `model` in place with the method `config.method` names, to forget `forget_batches`.

    GA, GradDiff and NPO train every weight with AdamW (`codeunlearn.baselines.fine_tuning`); RMU only
    the MLPs of its layer and the two below (`codeunlearn.baselines.rmu`).

    Args:
        model: a causal LM; left in eval mode with its `requires_grad` flags as they were.
        forget_batches: one optimizer step per batch per epoch, reshuffled per epoch by config.seed.
        retain_batches: cycled alongside when the method has a retain term (GradDiff, NPO+RT, RMU);
            ignored otherwise, and may then be empty.
    Returns:
        Steps, time, tokens, a FLOP estimate and the per-step loss history.
    Raises:
        ConfigError: a bad config, no forget batches, or a retain term without retain batches.
    """
    config.validate()
    return get_method(config.method).unlearn(model, forget_batches, retain_batches, config)
