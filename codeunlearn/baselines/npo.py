"""Negative preference optimisation (NPO, Zhang et al. 2024); with a retain term it is NPO+RT."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from codeunlearn.baselines.fine_tuning import LossAndLogs, LossMethod, StepBatches, sequence_logprobs
from codeunlearn.core.config import BaselineConfig


class NPO(LossMethod):
    """NPO: -(2/beta) logsigmoid(-beta (log p_theta - log p_ref)), mean over the batch.

    Bounded below by 0, so it slows down where GA diverges; retain_coef > 0 adds the retain NLL (NPO+RT).
    """

    uses_reference = True
    uses_retain = True

    def loss(self, model: nn.Module, step: StepBatches, config: BaselineConfig) -> LossAndLogs:
        log_ratio = sequence_logprobs(model, step.forget) - step.reference_logprobs  # (B,)
        loss = -(2 / config.beta) * F.logsigmoid(-config.beta * log_ratio).mean()
        return loss, {"log_ratio": log_ratio.mean().item()}
