"""What a bottleneck serves under besides its weights and mask: the serving policy (how codes are
searched and what a masked code's slot gets, which training does not fix), the mask's prompt
detectors, and what a forward carries to the cached decoding steps that extend it.

None of it is saved with the model: `CodebookBottleneck.serve` puts a policy in force on one loaded
model, and another model loaded from the same weights keeps its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from codeunlearn.core.config import BottleneckConfig, default_search_groups

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class ServingPolicy:
    """The settings a built bottleneck may serve under; their meaning is BottleneckConfig's fields
    of the same names. `of(config)` gives a config's, `dataclasses.replace` changes some."""

    search: str  # "exact" or "grouped"
    search_groups: int
    search_probes: int
    mask_policy: str  # what a masked code's slot gets: "next_best" or "zero"
    mask_gate: int
    mask_context_gate: int
    mask_context_after: int
    mask_condition: str  # "none", or "prompt" / "text" for the mask's topic detectors
    mask_detect_after: int

    @classmethod
    def of(cls, config: BottleneckConfig) -> ServingPolicy:
        """The policy `config` names (a model serves under its build config's until told otherwise)."""
        return cls(**{field.name: getattr(config, field.name) for field in dataclasses.fields(cls)})

    def applied_to(self, config: BottleneckConfig) -> BottleneckConfig:
        """`config` with these settings in place of its own, checked.

        Raises:
            ConfigError: the settings are invalid for this codebook (see BottleneckConfig).
        """
        served = dataclasses.replace(config, **dataclasses.asdict(self))
        served.validate()
        return served

    def n_search_groups(self, config: BottleneckConfig) -> int:
        """G of the grouped search: search_groups, or the power of two nearest sqrt(n_codes)."""
        return self.search_groups or default_search_groups(config.n_codes, config.top_k)

    @property
    def search_settings(self) -> tuple[str, int, int]:
        """(search, search_groups, search_probes): what a grouped index is built for."""
        return (self.search, self.search_groups, self.search_probes)

    @property
    def drops_slots(self) -> bool:
        """Whether a masked code's slot is emptied (`zero`) rather than refilled (`next_best`)."""
        return self.mask_policy == "zero"


@dataclass(frozen=True, eq=False)
class PromptDetectors:
    """The mask's topic detectors as x . w + c >= 0 on a mean input x: weight (S, d), offset (S,)."""

    weight: torch.Tensor
    offset: torch.Tensor

    @classmethod
    def stacked(
        cls, detectors: Sequence[tuple[torch.Tensor | np.ndarray, float]], device: torch.device
    ) -> PromptDetectors:
        """Detectors given as (w (d,), c) pairs (TopicDetector.as_linear), stacked on `device`."""
        weight = torch.stack([torch.as_tensor(w, dtype=torch.float32) for w, _ in detectors]).to(device)
        offset = torch.tensor([c for _, c in detectors], dtype=torch.float32, device=device)
        return cls(weight, offset)

    def flag(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Whether any detector flags each row's prompt: its input x (B, T, d) averaged over the
        positions `prompt` (B, T) marks. A row with no prompt token is not flagged. (B,) bool"""
        weights = prompt.float()
        tokens = weights.sum(1, keepdim=True)  # (B, 1)
        means = (x.float() * weights.unsqueeze(-1)).sum(1) / tokens.clamp_min(1)  # (B, d)
        scores = means @ self.weight.T + self.offset  # (B, S)
        return (scores >= 0).any(-1) & (tokens.squeeze(1) > 0)


@dataclass
class TextScan:
    """What mask_condition="text" carries from a forward to the cached decoding steps extending it,
    per sequence: the detectors' summed scores x . w of its inputs so far (B, S), how many inputs
    (B,), and whether a detector has flagged it (B,)."""

    sums: torch.Tensor
    count: torch.Tensor
    flagged: torch.Tensor


@dataclass
class PromptScope:
    """Inside `CodebookBottleneck.prompted`: each row's prompt length (B,), BOS counted (None: the
    whole first forward), and whether its prompt was flagged (B,), set by the forward that saw it."""

    lengths: torch.Tensor | None
    flags: torch.Tensor | None = None


@dataclass
class ServingState:
    """Everything a bottleneck serves under that is not saved with it."""

    policy: ServingPolicy
    detectors: PromptDetectors | None = None
    prompt: PromptScope | None = None  # set only inside `prompted`
    # context gate: per sequence, the tokens gated at mask_gate so far, carried from a forward over
    # whole sequences to the cached decoding steps that extend them (B,)
    gated_so_far: torch.Tensor | None = None
    text_scan: TextScan | None = None  # mask_condition="text": the detectors' reading so far

    def forget_prompt_flags(self) -> None:
        """A new mask or detector: a prompt flagged before must be judged again."""
        if self.prompt is not None:
            self.prompt.flags = None

    def forget_carried(self) -> None:
        """A new mask or policy: nothing carried from earlier forwards applies."""
        self.gated_so_far = None
        self.text_scan = None
        self.forget_prompt_flags()
