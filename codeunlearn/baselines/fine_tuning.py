"""The loop GA, GradDiff and NPO share: AdamW on every weight, one step per forget batch, each
method adding only its loss (as open-unlearning's trainers override `compute_loss`)."""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from codeunlearn.baselines.base import BaselineResult, Method, autocast_for, epoch_orders
from codeunlearn.core.config import BaselineConfig
from codeunlearn.core.errors import ConfigError
from codeunlearn.core.progress import progress
from codeunlearn.data.batching import Batch, token_nll

log = logging.getLogger(__name__)

LossAndLogs = tuple[torch.Tensor, dict[str, float]]
"""(loss to minimise, numbers to log)."""


@dataclass
class StepBatches:
    """What one step's loss sees: a forget batch, its reference log-probs (NPO) and a retain batch."""

    forget: Batch
    reference_logprobs: torch.Tensor | None  # (B,) sequence log-probs under the starting model
    retain: Batch | None


def sequence_logprobs(model: nn.Module, batch: Batch) -> torch.Tensor:
    """log p(y|x) per example (B,): the sum of its real next tokens' log-probs, as NPO defines it."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return -token_nll(logits, batch).sum(1)  # same shift and padding rule as evaluation


def mean_nll(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Token-weighted mean NLL of a batch, the fine-tuning loss."""
    return -sequence_logprobs(model, batch).sum() / batch.attention_mask[:, 1:].sum()


@torch.no_grad()
def reference_logprobs(model: nn.Module, batches: Sequence[Batch]) -> list[torch.Tensor]:
    """Sequence log-probs of the starting model on each forget batch, computed once before training.

    The frozen reference only ever scores these fixed batches, so caching its outputs equals keeping a
    frozen copy (eval mode, no dropout) at no extra memory and one forward per batch instead of one per
    epoch. Call it before the model changes.
    """
    was_training = model.training
    model.eval()
    try:
        with autocast_for(next(model.parameters()).device):
            return [sequence_logprobs(model, batch).detach() for batch in batches]
    finally:
        model.train(was_training)


class LossMethod(Method):
    """A baseline that is one loss over the shared fine-tuning loop.

    The loop adds retain_coef x retain NLL to the loss when `uses_retain` (skipped when retain_coef
    is 0), and hands the loss the starting model's sequence log-probs when `uses_reference`.
    """

    uses_reference: ClassVar[bool] = False
    uses_retain: ClassVar[bool] = False

    @abstractmethod
    def loss(self, model: nn.Module, step: StepBatches, config: BaselineConfig) -> LossAndLogs:
        """The method's forget loss on one step's batches, and the numbers to log."""

    def reads_retain(self, config: BaselineConfig) -> bool:
        return self.uses_retain and config.retain_coef > 0

    def unlearn(
        self,
        model: nn.Module,
        forget_batches: Sequence[Batch],
        retain_batches: Sequence[Batch],
        config: BaselineConfig,
    ) -> BaselineResult:
        """Fine-tune every weight of `model` in place with AdamW.

        Args:
            model: a causal LM; left in eval mode with its `requires_grad` flags as they were.
            forget_batches: one optimizer step per batch per epoch, reshuffled per epoch by config.seed.
            retain_batches: cycled alongside when the method has a retain term (GradDiff, NPO+RT);
                ignored otherwise, and may then be empty.
        Raises:
            ConfigError: no forget batches, or a retain term without retain batches.
        """
        uses_retain = self.reads_retain(config)
        if not forget_batches:
            raise ConfigError("no forget batches: a baseline needs at least one forget example")
        if uses_retain and not retain_batches:
            raise ConfigError(
                f"baseline.method={config.method!r} with baseline.retain_coef={config.retain_coef} needs "
                "retain batches: pass some, or set baseline.retain_coef=0 to drop the retain term"
            )
        device = next(model.parameters()).device
        forget = [batch.to(device) for batch in forget_batches]
        retain = [batch.to(device) for batch in retain_batches] if uses_retain else []
        reference = reference_logprobs(model, forget) if self.uses_reference else None
        flags = [p.requires_grad for p in model.parameters()]
        model.requires_grad_(True)
        try:
            return self._train(model, forget, retain, reference, config)
        finally:
            model.eval()
            for parameter, flag in zip(model.parameters(), flags, strict=True):
                parameter.requires_grad_(flag)

    def _step_loss(self, model: nn.Module, step: StepBatches, config: BaselineConfig) -> LossAndLogs:
        """The method's forget loss plus retain_coef x retain NLL when this step carries a retain batch."""
        loss, logs = self.loss(model, step, config)
        if step.retain is None:
            return loss, logs
        retain_nll = mean_nll(model, step.retain)
        return loss + config.retain_coef * retain_nll, {**logs, "retain_nll": retain_nll.item()}

    def _train(
        self,
        model: nn.Module,
        forget: list[Batch],
        retain: list[Batch],
        reference: list[torch.Tensor] | None,
        config: BaselineConfig,
    ) -> BaselineResult:
        torch.manual_seed(config.seed)  # dropout, where a model has any
        device = next(model.parameters()).device
        fused = {"fused": True} if device.type == "cuda" else {}
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay, **fused
        )
        total, history, tokens = config.epochs * len(forget), [], 0
        model.train()
        started = time.perf_counter()
        bar = progress(total=total, desc=f"unlearning ({config.method})")
        for step, index in enumerate(epoch_orders(len(forget), config.epochs, config.seed)):
            batches = StepBatches(
                forget[index],
                reference[index] if reference is not None else None,
                retain[step % len(retain)] if retain else None,
            )
            with autocast_for(device):
                loss, logs = self._step_loss(model, batches, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            tokens += batches.forget.n_tokens + (batches.retain.n_tokens if batches.retain is not None else 0)
            history.append({"step": step, "loss": loss.item(), **logs})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        elapsed_s = time.perf_counter() - started
        log.info("%s: %d steps, %d tokens in %.1f s", config.method, total, tokens, elapsed_s)
        # Kaplan's estimate: 6 N FLOPs per trained token (forward + backward), 2 N per forward-only token.
        n_params = sum(p.numel() for p in model.parameters())
        reference_tokens = sum(batch.n_tokens for batch in forget) if reference is not None else 0
        return BaselineResult(
            method=config.method,
            steps=total,
            elapsed_s=elapsed_s,
            tokens=tokens,
            reference_tokens=reference_tokens,
            flops_estimate=6.0 * n_params * tokens + 2.0 * n_params * reference_tokens,
            history=history,
        )
