"""RMU (Li et al. 2024, the WMDP paper): unlearning by misdirecting one layer's activations.

On forget text the residual stream after layer `rmu_layer` is pushed toward a fixed random direction
of large norm, so the layers above see noise where the topic was; on retain text it is held at the
starting model's activations. Only the MLPs of that layer and the two below it are trained, as in the
paper, and a forward pass stops at `rmu_layer`, so a step costs a fraction of a full fine-tuning step.

One departure from the paper: its steering coefficient is an absolute norm tuned per model (6.5 for
Zephyr-7B, 300 for Mixtral). Here `rmu_steering` is a multiple of the starting model's mean
activation norm at that layer on the forget text, so one default carries over between models.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from codeunlearn.baselines.base import BaselineResult, Method, autocast_for, epoch_orders
from codeunlearn.core.config import BaselineConfig
from codeunlearn.core.errors import ConfigError
from codeunlearn.core.progress import progress
from codeunlearn.data.batching import Batch
from codeunlearn.model.surgery import decoder_layers, residual_after

log = logging.getLogger(__name__)

UPDATED_LAYERS = 3  # the paper updates layers l-2, l-1 and l


class RMU(Method):
    """RMU: misdirect one layer's forget activations, hold its retain activations (its own loop)."""

    def reads_retain(self, config: BaselineConfig) -> bool:
        return True  # its retain term holds the retain activations in place

    def unlearn(
        self,
        model: nn.Module,
        forget_batches: Sequence[Batch],
        retain_batches: Sequence[Batch],
        config: BaselineConfig,
    ) -> BaselineResult:
        return unlearn_with_rmu(model, forget_batches, retain_batches, config)


def rmu_parameters(model: nn.Module, layer: int) -> list[nn.Parameter]:
    """The MLP weights RMU trains: those of decoder layers layer-2 .. layer (fewer at the bottom)."""
    layers = decoder_layers(model)
    chosen = layers[max(0, layer - UPDATED_LAYERS + 1) : layer + 1]
    if not all(hasattr(block, "mlp") for block in chosen):
        raise ConfigError(
            f"{model.config.model_type} layers have no `mlp` submodule, so RMU cannot pick its weights; "
            "use baseline.method ga, graddiff or npo for this model"
        )
    return [p for block in chosen for p in block.mlp.parameters()]


def unlearn_with_rmu(
    model: nn.Module, forget_batches: Sequence[Batch], retain_batches: Sequence[Batch], config: BaselineConfig
) -> BaselineResult:
    """Train the MLPs of `config.rmu_layer` and the two below it in place, so that forget activations
    point at a random vector.

    Args:
        model: a decoder-only causal LM (a codebook model's `model` works: its bottleneck is only run
            when it sits at or below rmu_layer). Left in eval mode, `requires_grad` flags as they were.
        forget_batches: one step per batch per epoch, reshuffled per epoch by config.seed.
        retain_batches: cycled alongside; their starting activations are the retain targets.
    Returns:
        Steps, time, tokens, a FLOP estimate and the per-step history (loss, forget_mse, retain_mse).
    Raises:
        ConfigError: rmu_layer outside the model, no forget or no retain batches.
    """
    n_layers = len(decoder_layers(model))
    if config.rmu_layer is None:
        config = replace(config, rmu_layer=n_layers // 4)
    if not 0 <= config.rmu_layer < n_layers:
        raise ConfigError(
            f"baseline.rmu_layer={config.rmu_layer}, but the model has {n_layers} decoder layers: "
            f"pick one in 0..{n_layers - 1} (a quarter of the way up is the paper's choice)"
        )
    if not forget_batches or not retain_batches:
        raise ConfigError("RMU needs forget and retain batches: its retain term holds retain activations")
    device = next(model.parameters()).device
    forget = [batch.to(device) for batch in forget_batches]
    retain = [batch.to(device) for batch in retain_batches]
    retain_targets = _activations(model, config.rmu_layer, retain)
    control = _control_vector(model, config, forget)
    trained = rmu_parameters(model, config.rmu_layer)
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    for parameter in trained:
        parameter.requires_grad_(True)
    try:
        result = _train(model, trained, forget, retain, retain_targets, control, config)
    finally:
        model.eval()
        for parameter, flag in zip(model.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)
    below = sum(
        p.numel() for block in decoder_layers(model)[: config.rmu_layer + 1] for p in block.parameters()
    )
    n_trained = sum(p.numel() for p in trained)
    # Forward through layers 0..l (2 N_below per token) and backward into the trained MLPs (4 N_trained
    # for their weight and input gradients; the attention between them adds a little, not counted).
    reference_tokens = sum(batch.n_tokens for batch in retain)
    result.reference_tokens = reference_tokens
    result.flops_estimate = (2.0 * below + 4.0 * n_trained) * result.tokens + 2.0 * below * reference_tokens
    return result


@torch.no_grad()
def _activations(model: nn.Module, layer: int, batches: Sequence[Batch]) -> list[torch.Tensor]:
    model.eval()
    with autocast_for(next(model.parameters()).device):
        return [residual_after(model, layer, b.input_ids, b.attention_mask).float() for b in batches]


def _control_vector(model: nn.Module, config: BaselineConfig, forget: Sequence[Batch]) -> torch.Tensor:
    """A fixed random direction (uniform entries, as in the paper) of rmu_steering x the mean forget
    activation norm."""
    activations = _activations(model, config.rmu_layer, forget)
    norms = [h.norm(dim=-1)[b.attention_mask.bool()] for h, b in zip(activations, forget, strict=True)]
    mean_norm = torch.cat(norms).mean()
    generator = torch.Generator().manual_seed(config.seed)
    direction = torch.rand(activations[0].shape[-1], generator=generator)
    return config.rmu_steering * mean_norm * direction.to(mean_norm.device) / direction.norm()


def _masked_mse(hidden: torch.Tensor, target: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real tokens' coordinates; padding does not count."""
    real = attention_mask.bool()
    return (hidden.float()[real] - target.expand_as(hidden)[real]).pow(2).mean()


def _train(
    model: nn.Module,
    trained: list[nn.Parameter],
    forget: list[Batch],
    retain: list[Batch],
    retain_targets: list[torch.Tensor],
    control: torch.Tensor,
    config: BaselineConfig,
) -> BaselineResult:
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(trained, lr=config.rmu_lr, weight_decay=config.weight_decay)
    total, history, tokens = config.epochs * len(forget), [], 0
    model.train()
    started = time.perf_counter()
    bar = progress(total=total, desc="unlearning (rmu)")
    for step, index in enumerate(epoch_orders(len(forget), config.epochs, config.seed)):
        forget_batch, retain_batch = forget[index], retain[step % len(retain)]
        with autocast_for(device):
            forget_hidden = residual_after(
                model, config.rmu_layer, forget_batch.input_ids, forget_batch.attention_mask
            )
            retain_hidden = residual_after(
                model, config.rmu_layer, retain_batch.input_ids, retain_batch.attention_mask
            )
        forget_mse = _masked_mse(forget_hidden, control, forget_batch.attention_mask)
        retain_mse = _masked_mse(
            retain_hidden, retain_targets[step % len(retain)], retain_batch.attention_mask
        )
        loss = forget_mse + config.rmu_alpha * retain_mse
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, config.max_grad_norm)
        optimizer.step()
        tokens += forget_batch.n_tokens + retain_batch.n_tokens
        history.append(
            {
                "step": step,
                "loss": loss.item(),
                "forget_mse": forget_mse.item(),
                "retain_mse": retain_mse.item(),
            }
        )
        bar.update(1)
        bar.set_postfix(forget=f"{forget_mse.item():.3f}", retain=f"{retain_mse.item():.4f}")
    bar.close()
    elapsed_s = time.perf_counter() - started
    log.info("rmu: %d steps at layer %d, %d tokens in %.1f s", total, config.rmu_layer, tokens, elapsed_s)
    return BaselineResult(
        method="rmu",
        steps=total,
        elapsed_s=elapsed_s,
        tokens=tokens,
        reference_tokens=0,
        flops_estimate=float("nan"),
        history=history,
    )
