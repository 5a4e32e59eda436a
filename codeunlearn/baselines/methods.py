"""Gradient unlearning baselines (GA, GradDiff, NPO/NPO+RT, RMU) on the same model and data as masking.

The paper compared against no baseline; these answer "what would fine-tuning away the topic cost and
do?" on identical forget/retain batches, with their cost counted in tokens and FLOPs. GA, GradDiff and
NPO are each one loss function in a registry, picked by `BaselineConfig.method`; RMU acts on one
layer's activations rather than the output, so it has a loop of its own (`codeunlearn.baselines.rmu`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from codeunlearn.core.config import BaselineConfig  # defined there so RunConfig can nest it
from codeunlearn.core.errors import ConfigError
from codeunlearn.core.progress import progress
from codeunlearn.data.batching import Batch, token_nll

log = logging.getLogger(__name__)


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


@dataclass
class StepBatches:
    """What one step's loss sees: a forget batch, its reference log-probs (NPO) and a retain batch."""

    forget: Batch
    reference_logprobs: torch.Tensor | None  # (B,) sequence log-probs under the starting model
    retain: Batch | None


LossAndLogs = tuple[torch.Tensor, dict[str, float]]
MethodLoss = Callable[[nn.Module, StepBatches, BaselineConfig], LossAndLogs]
"""(model, step batches, config) -> (loss to minimise, numbers to log)."""


@dataclass(frozen=True)
class Method:
    """A registered baseline: its loss and which inputs the loop must prepare for it."""

    loss: MethodLoss
    uses_reference: bool  # needs the starting model's sequence log-probs on the forget batches
    uses_retain: bool  # the loop adds retain_coef x retain NLL (skipped when retain_coef is 0)


_METHODS: dict[str, Method] = {}
BASELINE_METHODS: Mapping[str, Method] = MappingProxyType(_METHODS)
"""Read-only view of the registered methods by name; add one with `@register_method(name, ...)`."""


OWN_LOOP_METHODS = ("rmu",)
"""Methods with a training loop of their own rather than a loss in BASELINE_METHODS."""


def method_names() -> list[str]:
    """Every baseline `unlearn_with_gradients` can run, sorted."""
    return sorted([*_METHODS, *OWN_LOOP_METHODS])


def reads_retain(config: BaselineConfig) -> bool:
    """Whether a run of `config` trains on retain batches: RMU always (its retain term holds retain
    activations), GradDiff and NPO+RT while retain_coef > 0, GA never.

    Raises:
        KeyError: a method that is not registered (validate the config first).
    """
    if config.method in OWN_LOOP_METHODS:
        return True
    return _METHODS[config.method].uses_retain and config.retain_coef > 0


def register_method(
    name: str, uses_reference: bool = False, uses_retain: bool = False
) -> Callable[[MethodLoss], MethodLoss]:
    """Decorator that adds a loss to BASELINE_METHODS under `name` (a duplicate name is an error)."""

    def decorator(loss: MethodLoss) -> MethodLoss:
        if name in _METHODS:
            raise ConfigError(f"baseline method {name!r} is already registered: pick another name")
        _METHODS[name] = Method(loss, uses_reference, uses_retain)
        return loss

    return decorator


def sequence_logprobs(model: nn.Module, batch: Batch) -> torch.Tensor:
    """log p(y|x) per example (B,): the sum of its real next tokens' log-probs, as NPO defines it."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return -token_nll(logits, batch).sum(1)  # same shift and padding rule as evaluation


def mean_nll(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Token-weighted mean NLL of a batch, the fine-tuning loss."""
    return -sequence_logprobs(model, batch).sum() / batch.attention_mask[:, 1:].sum()


@register_method("ga")
@register_method("graddiff", uses_retain=True)
def ascent_loss(model: nn.Module, step: StepBatches, config: BaselineConfig) -> LossAndLogs:
    """GA and GradDiff's forget term: maximise the forget NLL (minimise its negative).

    Unbounded below, hence the gradient clipping; GradDiff adds retain_coef x retain NLL to it.
    """
    forget_nll = mean_nll(model, step.forget)
    return -forget_nll, {"forget_nll": forget_nll.item()}


@register_method("npo", uses_reference=True, uses_retain=True)
def npo_loss(model: nn.Module, step: StepBatches, config: BaselineConfig) -> LossAndLogs:
    """NPO (Zhang et al. 2024): -(2/beta) logsigmoid(-beta (log p_theta - log p_ref)), mean over the batch.

    Bounded below by 0, so it slows down where GA diverges; with a retain term it is NPO+RT.
    """
    log_ratio = sequence_logprobs(model, step.forget) - step.reference_logprobs  # (B,)
    loss = -(2 / config.beta) * F.logsigmoid(-config.beta * log_ratio).mean()
    return loss, {"log_ratio": log_ratio.mean().item()}


def _step_loss(model: nn.Module, method: Method, step: StepBatches, config: BaselineConfig) -> LossAndLogs:
    """The method's forget loss plus retain_coef x retain NLL when this step carries a retain batch."""
    loss, logs = method.loss(model, step, config)
    if step.retain is None:
        return loss, logs
    retain_nll = mean_nll(model, step.retain)
    return loss + config.retain_coef * retain_nll, {**logs, "retain_nll": retain_nll.item()}


def epoch_orders(n_batches: int, epochs: int, seed: int) -> Iterator[int]:
    """Forget batch indices, reshuffled every epoch from the seed."""
    for epoch in range(epochs):
        yield from torch.randperm(n_batches, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


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


def unlearn_with_gradients(
    model: nn.Module, forget_batches: Sequence[Batch], retain_batches: Sequence[Batch], config: BaselineConfig
) -> BaselineResult:
    """Fine-tune every weight of `model` in place with AdamW to forget `forget_batches` (RMU: only the
    MLPs of its layer and the two below, see `codeunlearn.baselines.rmu`).

    Args:
        model: a causal LM; left in eval mode with its `requires_grad` flags as they were.
        forget_batches: one optimizer step per batch per epoch, reshuffled per epoch by config.seed.
        retain_batches: cycled alongside when the method has a retain term (GradDiff, NPO+RT);
            ignored otherwise, and may then be empty.
    Returns:
        Steps, time, tokens, a FLOP estimate and the per-step loss history.
    Raises:
        ConfigError: a bad config, no forget batches, or a retain term without retain batches.
    """
    config.validate()
    if config.method == "rmu":
        from codeunlearn.baselines.rmu import unlearn_with_rmu  # rmu builds on this module

        return unlearn_with_rmu(model, forget_batches, retain_batches, config)
    method = _METHODS[config.method]
    uses_retain = reads_retain(config)
    if not forget_batches:
        raise ConfigError("no forget batches: a baseline needs at least one forget example")
    if uses_retain and not retain_batches:
        raise ConfigError(
            f"baseline.method={config.method!r} with baseline.retain_coef={config.retain_coef} needs retain "
            "batches: pass some, or set baseline.retain_coef=0 to drop the retain term"
        )
    device = next(model.parameters()).device
    forget = [batch.to(device) for batch in forget_batches]
    retain = [batch.to(device) for batch in retain_batches] if uses_retain else []
    reference = reference_logprobs(model, forget) if method.uses_reference else None
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)
    try:
        return _train(model, method, forget, retain, reference, config)
    finally:
        model.eval()
        for parameter, flag in zip(model.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)


def autocast_for(device: torch.device) -> torch.autocast:
    """bf16 on a GPU, as codebook training runs; full precision on a CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _train(
    model: nn.Module,
    method: Method,
    forget: list[Batch],
    retain: list[Batch],
    reference: list[torch.Tensor] | None,
    config: BaselineConfig,
) -> BaselineResult:
    torch.manual_seed(config.seed)  # dropout, where a model has any
    device = next(model.parameters()).device
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, **fused)
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
            loss, logs = _step_loss(model, method, batches, config)
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
