"""Gradient difference (GradDiff): GA's forget term plus retain_coef x retain NLL."""

from __future__ import annotations

from torch import nn

from codeunlearn.baselines.fine_tuning import LossAndLogs, LossMethod, StepBatches
from codeunlearn.baselines.ga import ascent_loss
from codeunlearn.core.config import BaselineConfig


class GradDiff(LossMethod):
    """GradDiff: GA's loss on the forget batch; the shared loop adds the retain term."""

    uses_retain = True

    def loss(self, model: nn.Module, step: StepBatches, config: BaselineConfig) -> LossAndLogs:
        return ascent_loss(model, step)
