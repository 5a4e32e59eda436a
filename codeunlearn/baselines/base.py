"""What every gradient baseline is: a `Method` that fine-tunes a model in place and returns its cost.

The paper compared against no baseline; the baselines answer "what would fine-tuning away the topic
cost and do?" on identical forget/retain batches, with their cost counted in tokens and FLOPs. Each
method is one module (`ga`, `graddiff`, `npo`, `rmu`), named in `codeunlearn.baselines.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from codeunlearn.core.config import BaselineConfig
from codeunlearn.data.batching import Batch


@dataclass
class BaselineResult:
    """Cost and loss curve of one run. FLOPs: 6 N per trained token, 2 N per reference-only token."""

    method: str
    steps: int
    elapsed_s: float
    tokens: int  # real tokens through the trained model (forward + backward), forget and retain
    reference_tokens: int  # real tokens through the starting model, forward only (NPO)
    flops_estimate: float
    history: list[dict[str, float]] = field(default_factory=list)  # per step: loss, forget_nll, ...


class Method(ABC):
    """A gradient unlearning baseline; the registry runs it by name (`BaselineConfig.method`)."""

    @abstractmethod
    def reads_retain(self, config: BaselineConfig) -> bool:
        """Whether a run of `config` trains on retain batches (callers may skip building them)."""

    @abstractmethod
    def unlearn(
        self,
        model: nn.Module,
        forget_batches: Sequence[Batch],
        retain_batches: Sequence[Batch],
        config: BaselineConfig,
    ) -> BaselineResult:
        """Fine-tune `model` in place to forget `forget_batches`; `config` is already validated.

        The model is left in eval mode with its `requires_grad` flags as they were.
        """


def autocast_for(device: torch.device) -> torch.autocast:
    """bf16 on a GPU, as codebook training runs; full precision on a CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def epoch_orders(n_batches: int, epochs: int, seed: int) -> Iterator[int]:
    """Forget batch indices, reshuffled every epoch from the seed."""
    for epoch in range(epochs):
        yield from torch.randperm(n_batches, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
