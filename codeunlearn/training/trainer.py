"""Training the codebook into the model once (and the no-bottleneck fine-tuned reference).

Modes: `frozen` trains the bottleneck only; `above` also trains the decoder layers above it;
`joint` trains every weight (the paper's setting, for small models). In `frozen` and `above` the
layers below the bottleneck never change, so their output is computed once and reused every epoch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from codeunlearn.core.config import TrainConfig
from codeunlearn.core.progress import progress
from codeunlearn.data.batching import Batch, token_nll
from codeunlearn.model.bottleneck import NO_CODE
from codeunlearn.model.precision import training_precision
from codeunlearn.model.surgery import (
    CodebookModel,
    bypassed,
    decoder_layers,
    forward_from_site,
    forward_to_site,
    modules_above,
    recording,
)
from codeunlearn.training.checkpoint import resume_checkpoint, save_checkpoint
from codeunlearn.training.code_routes import TextRoutes
from codeunlearn.training.code_start import init_codes
from codeunlearn.training.distributed import DataParallel, broadcast_from_main, local_slice, sum_gradients
from codeunlearn.training.distributed import current as current_data_parallel
from codeunlearn.training.train_state import TrainResult, _StepOutput, _TrainState

log = logging.getLogger(__name__)
COLLAPSED_SHARE = 0.9  # dead-code share past which training is reported as collapsed


@torch.no_grad()
def site_activations(
    codebook_model: CodebookModel, batches: list[Batch], precision: str = "auto"
) -> list[torch.Tensor]:
    """Residual output of the bottleneck layer for each batch (B, T, d), bottleneck bypassed, in the
    precision training runs in (train.precision)."""
    device = codebook_model.device
    with bypassed(codebook_model), training_precision(device, precision):
        return [
            forward_to_site(codebook_model, b.input_ids.to(device), b.attention_mask.to(device))[0]
            for b in progress(batches, desc="layers below the bottleneck")
        ]


def trainable_parameters(codebook_model: CodebookModel, mode: str, use_bottleneck: bool = True) -> list[dict]:
    """Optimizer parameter groups for a mode; base weights not in a group get requires_grad False."""
    model = codebook_model.model
    for parameter in model.parameters():
        parameter.requires_grad_(mode == "joint")
    if mode == "above":
        for module in modules_above(model, codebook_model.layer):
            module.requires_grad_(True)
    base = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": base, "name": "base"}] if base else []
    if use_bottleneck:
        groups.append({"params": list(codebook_model.bottleneck.parameters()), "name": "bottleneck"})
    return groups


def counted_codes(codes: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """codes (B, T, k) with NO_CODE outside the content positions content (B, T) bool."""
    return codes.masked_fill(~content.unsqueeze(-1), NO_CODE)


def content_sum(values: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Sum of values (B, T) over the content positions content (B, T) bool, without a device sync."""
    return torch.where(content, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()


def _step(
    codebook_model: CodebookModel,
    batch: Batch,
    hidden: torch.Tensor | None,
    config: TrainConfig,
    use_bottleneck: bool,
    n_targets: float | None = None,
) -> _StepOutput:
    """Loss of one (local) batch. Sums are divided by `n_targets`, the global batch's next-token
    count per process (default: this batch's own), so summed gradients give the global mean's."""
    device = codebook_model.device
    n_targets = n_targets or float(batch.attention_mask[:, 1:].sum())
    batch = batch.to(device)
    output = None
    if hidden is not None:  # layers below are frozen: start from their cached output
        if use_bottleneck:
            output = codebook_model.bottleneck(hidden)
        logits = forward_from_site(codebook_model, output.hidden if output else hidden, batch.attention_mask)
    else:
        # No KV cache: training never decodes, and torch.compile would guard on each layer's cache
        # state and recompile the layer forward once per layer.
        with recording(codebook_model) as outputs:
            logits = codebook_model.model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
            ).logits
        output = outputs[0] if outputs else None
    nll = token_nll(logits, batch).sum() / n_targets
    if output is None:
        return _StepOutput(nll, nll.detach(), torch.zeros((), device=device), None)
    content = batch.attention_mask.bool().clone()
    content[:, 0] = False
    # content positions (real tokens after position 0) are as many as next-token targets; `where`,
    # not boolean indexing, which would wait for the device to count the positions
    recon = content_sum(output.recon_error, content) / n_targets
    loss = nll + config.recon_coef * recon
    if output.route_error is not None:
        loss = loss + config.route_coef * content_sum(output.route_error, content) / n_targets
    site = (hidden, content) if hidden is not None else None
    return _StepOutput(loss, nll.detach(), recon.detach(), counted_codes(output.codes, content), site)


def _schedule(step: int, total: int, warmup: int = 20) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress_share = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_share)))


def _batch_order(n_batches: int, total_steps: int, seed: int) -> Iterator[int]:
    epoch = 0
    emitted = 0
    while emitted < total_steps:
        order = torch.randperm(n_batches, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        yield from order[: total_steps - emitted]
        emitted += min(n_batches, total_steps - emitted)
        epoch += 1


def train(
    codebook_model: CodebookModel,
    batches: list[Batch],
    config: TrainConfig,
    checkpoint_dir: Path | None = None,
    use_bottleneck: bool = True,
    routes: TextRoutes | None = None,
) -> TrainResult:
    """Train the codebook (or, with use_bottleneck False, the reference without one) in place.

    Args:
        batches: padded training batches; their order is shuffled per epoch with config.seed.
        checkpoint_dir: where to checkpoint every config.checkpoint_every steps and resume from.
        routes: the codes each training text may choose (train.route_codes), or None for all.
    Returns:
        Steps, tokens, timings and the last loss, reconstruction error and dead-code share.
    """
    if not use_bottleneck:
        with bypassed(codebook_model):
            return _train(codebook_model, batches, config, checkpoint_dir, use_bottleneck, None)
    return _train(codebook_model, batches, config, checkpoint_dir, use_bottleneck, routes)


def _train(
    codebook_model: CodebookModel,
    batches: list[Batch],
    config: TrainConfig,
    checkpoint_dir: Path | None,
    use_bottleneck: bool,
    routes: TextRoutes | None,
) -> TrainResult:
    config.validate()
    torch.manual_seed(config.seed)
    groups = trainable_parameters(codebook_model, config.mode, use_bottleneck)
    lrs = {"base": config.base_lr, "bottleneck": config.lr}
    optimizer = torch.optim.AdamW(
        [dict(g, lr=lrs[g["name"]]) for g in groups],
        weight_decay=config.weight_decay,
        fused=codebook_model.device.type in ("cuda", "cpu"),  # one kernel per step: ~5% of a CPU step
    )
    parallel = current_data_parallel()
    local = [local_slice(batch, parallel) for batch in batches]  # this process's rows of each batch
    cached = _local_activations(codebook_model, local, config.precision) if config.mode != "joint" else None
    state = _TrainState(codebook_model.bottleneck.n_codes, codebook_model.device)
    if checkpoint_dir is not None:
        resume_checkpoint(codebook_model, optimizer, state, checkpoint_dir, use_bottleneck)
    if state.step == 0 and use_bottleneck and parallel.is_main:
        full = (cached if not parallel.is_distributed else None) or site_activations(
            codebook_model, batches, config.precision
        )
        init_codes(codebook_model, full, batches, config, routes)
    trained = [p for group in groups for p in group["params"]]
    broadcast_from_main([*trained, *codebook_model.bottleneck.buffers()], parallel)
    kept = routes.routes.code_routes() >= 0 if routes is not None else None  # reserved codes stay theirs
    total = math.ceil(config.epochs * len(batches))
    codebook_model.model.train(config.mode == "joint")
    started, tokens = time.perf_counter(), 0
    bar = progress(
        total=total, initial=state.step, desc="training codebook" if use_bottleneck else "reference"
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(codebook_model.bottleneck.holding_groups())  # grouped search: regroup at reseed
        if config.compile:
            stack.enter_context(compiled_layers(codebook_model))
        for step, index in enumerate(_batch_order(len(batches), total, config.seed)):
            if step < state.step:
                continue
            for group, base_lr in zip(optimizer.param_groups, [lrs[g["name"]] for g in groups], strict=True):
                group["lr"] = base_lr * _schedule(step, total)
            out = _train_step(
                codebook_model,
                optimizer,
                local[index],
                cached[index] if cached else None,
                config,
                use_bottleneck,
                _Parallel(parallel, trained, float(batches[index].attention_mask[:, 1:].sum())),
                routes,
            )
            tokens += batches[index].n_tokens
            state.record(out)
            if use_bottleneck and config.reseed_every and (step + 1) % config.reseed_every == 0:
                state.reseed(codebook_model, config.seed + step, parallel, kept)
            state.step = step + 1
            bar.update(1)
            if state.step % state.FLUSH_EVERY == 0 or state.step == total:
                state.show(bar)
            if (
                checkpoint_dir is not None
                and parallel.is_main
                and config.checkpoint_every
                and state.step % config.checkpoint_every == 0
            ):
                save_checkpoint(codebook_model, optimizer, state, checkpoint_dir, use_bottleneck)
    bar.close()
    codebook_model.model.eval()
    for parameter in codebook_model.model.parameters():
        parameter.requires_grad_(False)
    result = state.result(tokens, time.perf_counter() - started)
    if use_bottleneck and result.dead_share > COLLAPSED_SHARE:
        log.warning(
            "%.1f%% of the codes were dead at the end of training: the codebook has collapsed, and "
            "masks mined on it will not separate topics; lower train.base_lr or train.lr, or use "
            "train.mode=above",
            100 * result.dead_share,
        )
    return result


@contextlib.contextmanager
def compiled_layers(codebook_model: CodebookModel) -> Iterator[None]:
    """Each decoder layer's forward through torch.compile while inside; eager again after.

    Only `forward` is compiled, so the bottleneck's hook on its layer still runs eagerly: its code
    selection keeps Python-side caches that a graph cannot hold.
    """
    layers = list(decoder_layers(codebook_model.model))
    for layer in layers:
        layer.forward = torch.compile(layer.forward)
    log.debug("compiling %d decoder layers for training", len(layers))
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward  # the instance attribute goes; the class's forward is back


@dataclass(frozen=True)
class _Parallel:
    """What a step needs to take part in data-parallel training (trivial for one process)."""

    data_parallel: DataParallel
    parameters: list[torch.nn.Parameter]  # every trained parameter, in the same order on each process
    global_targets: float  # next-token targets in the whole global batch


def _train_step(
    codebook_model: CodebookModel,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    hidden: torch.Tensor | None,
    config: TrainConfig,
    use_bottleneck: bool,
    parallel: _Parallel | None = None,
    routes: TextRoutes | None = None,
) -> _StepOutput:
    optimizer.zero_grad(set_to_none=True)
    if batch.input_ids.shape[0] == 0:  # fewer rows than processes: this one only joins the gradient sum
        zero = torch.zeros((), device=codebook_model.device)
        out = _StepOutput(zero, zero, zero, None)
    else:
        n_targets = parallel.global_targets / parallel.data_parallel.world_size if parallel else None
        with contextlib.ExitStack() as stack:
            stack.enter_context(training_precision(codebook_model.device, config.precision))
            if routes is not None:
                allowed = routes.allowed(batch.rows)
                stack.enter_context(codebook_model.bottleneck.routed(allowed, config.route_margin))
            out = _step(codebook_model, batch, hidden, config, use_bottleneck, n_targets)
        out.loss.backward()
    if parallel is not None:
        sum_gradients(parallel.parameters, parallel.data_parallel)
    optimizer.step()
    return out


def _local_activations(
    codebook_model: CodebookModel, local: list[Batch], precision: str
) -> list[torch.Tensor | None]:
    """Cached site activations of this process's slices (None for an empty slice)."""
    present = [batch for batch in local if batch.input_ids.shape[0]]
    computed = iter(site_activations(codebook_model, present, precision))
    return [next(computed) if batch.input_ids.shape[0] else None for batch in local]
