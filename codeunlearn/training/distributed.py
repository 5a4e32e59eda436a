"""Data-parallel training across processes (`torchrun --nproc_per_node N -m codeunlearn train ...`).

Every process holds the whole model and the same list of global batches; each takes its contiguous
slice of every global batch's rows, and gradients are summed across processes after each backward.
Losses are divided by the global batch's token counts, so the summed gradient equals the gradient
one process computes on the whole global batch: results match a single process up to rounding.
Only the main process (rank 0) writes checkpoints, the model and logs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from codeunlearn.data.batching import Batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataParallel:
    """This process's place among the data-parallel processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def current() -> DataParallel:
    """The process group torch.distributed was initialised with, or a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return DataParallel()
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DataParallel(dist.get_rank(), dist.get_world_size(), local_rank)


def init_from_environment(device: str) -> DataParallel:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR...), if any.

    NCCL on CUDA, gloo on CPU. Processes other than rank 0 log warnings only.

    Args:
        device: "cuda" or "cpu", as the config resolved it.
    Returns:
        This process's DataParallel; single-process when WORLD_SIZE is unset or 1.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return current()
    if not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    parallel = current()
    if not parallel.is_main:
        logging.getLogger("codeunlearn").setLevel(logging.WARNING)
    log.info("data-parallel: %d processes, backend %s", parallel.world_size, dist.get_backend())
    return parallel


def process_device(device: str, parallel: DataParallel) -> str:
    """Each process on its own GPU (cuda:LOCAL_RANK); CPU processes share the CPU."""
    if device == "cuda" and parallel.is_distributed:
        return f"cuda:{parallel.local_rank}"
    return device


def local_slice(batch: Batch, parallel: DataParallel) -> Batch:
    """This process's contiguous rows of a global batch (possibly none when rows < processes)."""
    rows = batch.input_ids.shape[0]
    start = rows * parallel.rank // parallel.world_size
    stop = rows * (parallel.rank + 1) // parallel.world_size
    return Batch(batch.input_ids[start:stop], batch.attention_mask[start:stop], batch.rows[start:stop])


def sum_gradients(parameters: list[torch.nn.Parameter], parallel: DataParallel) -> None:
    """Sum every parameter's gradient across processes in one flat all-reduce.

    A gradient missing on one process counts as zero; one missing on every process stays None, so
    the optimizer skips that parameter exactly as it would in a single process.
    """
    if not parallel.is_distributed or not parameters:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    present = torch.tensor([float(p.grad is not None) for p in parameters], device=grads[0].device)
    flat = torch.cat([*(g.reshape(-1).float() for g in grads), present])
    dist.all_reduce(flat)
    summed, present = flat[: -len(parameters)], flat[-len(parameters) :].tolist()
    for parameter, grad, anywhere in zip(
        parameters, summed.split([p.numel() for p in parameters]), present, strict=True
    ):
        parameter.grad = grad.view_as(parameter).to(parameter.dtype) if anywhere else None


def sum_counts(counts: torch.Tensor, parallel: DataParallel, device: torch.device) -> torch.Tensor:
    """Element-wise sum of `counts` over processes, returned on counts' own device."""
    if not parallel.is_distributed:
        return counts
    summed = counts.to(device)  # NCCL reduces only GPU tensors
    dist.all_reduce(summed)
    return summed.to(counts.device)


def gather_rows(rows: torch.Tensor | None, parallel: DataParallel) -> torch.Tensor | None:
    """Concatenate every process's `rows` (n_r, ...) in rank order: the global batch's rows."""
    if not parallel.is_distributed:
        return rows
    pieces: list[torch.Tensor | None] = [None] * parallel.world_size
    dist.all_gather_object(pieces, rows.cpu() if rows is not None else None)
    present = [piece for piece in pieces if piece is not None and len(piece)]
    if not present:
        return None
    device = rows.device if rows is not None else present[0].device
    return torch.cat(present).to(device)


def broadcast_from_main(tensors: list[torch.Tensor], parallel: DataParallel) -> None:
    """Overwrite `tensors` in place with rank 0's values, so every process starts equal."""
    if not parallel.is_distributed:
        return
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=0)


def barrier(parallel: DataParallel) -> None:
    if parallel.is_distributed:
        dist.barrier()
