"""Gradient ascent (GA): maximise the forget NLL, nothing else."""

from __future__ import annotations

from torch import nn

from codeunlearn.baselines.fine_tuning import LossAndLogs, LossMethod, StepBatches, mean_nll
from codeunlearn.core.config import BaselineConfig


def ascent_loss(model: nn.Module, step: StepBatches) -> LossAndLogs:
    """Minus the forget batch's mean NLL: unbounded below, hence the gradient clipping."""
    forget_nll = mean_nll(model, step.forget)
    return -forget_nll, {"forget_nll": forget_nll.item()}


class GradientAscent(LossMethod):
    """GA: ascend the forget NLL; no retain term, so the retain texts suffer (GradDiff's reason)."""

    def loss(self, model: nn.Module, step: StepBatches, config: BaselineConfig) -> LossAndLogs:
        return ascent_loss(model, step)
