"""What a training run keeps between steps (step counter, code usage, loss history), the output of
one step it records, and the result the run returns."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from codeunlearn.model.bottleneck import NO_CODE
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.training.distributed import DataParallel, broadcast_from_main, gather_rows, sum_counts

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Steps, tokens and timings of a run, its last loss, reconstruction error and dead-code share."""

    steps: int
    tokens: int
    elapsed_s: float
    final_loss: float
    final_recon: float
    dead_share: float
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _StepOutput:
    """One step's loss and what the training state records of it, all still on the device: reading
    a value on the host waits for the device, so the state does that only every few steps."""

    loss: torch.Tensor
    nll: torch.Tensor  # () detached
    recon: torch.Tensor  # () detached
    codes: torch.Tensor | None  # (B, T, k) code ids, NO_CODE where no code is counted (padding, BOS)
    site: tuple[torch.Tensor, torch.Tensor] | None = None  # cached inputs (B, T, d) and content mask (B, T)


class _TrainState:
    """Step counter, code usage since the last re-seeding, and the loss history.

    Usage and the latest losses stay on the device; `flush` reads the losses on the host every
    `FLUSH_EVERY` steps, so the step loop does not wait for the device after every step.
    """

    FLUSH_EVERY = 25

    def __init__(self, n_codes: int, device: torch.device | str = "cpu") -> None:
        self.step = 0
        self.usage = torch.zeros(n_codes, dtype=torch.long, device=device)
        self.dead_share = 0.0
        self.recent_site: tuple[torch.Tensor, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def record(self, out: _StepOutput) -> None:
        self._pending.append((self.step, out.nll, out.recon))
        if out.codes is not None:
            ids = out.codes.flatten()
            counted = (ids != NO_CODE).long()
            self.usage.index_add_(0, ids.clamp_min(0).to(self.usage.device), counted.to(self.usage.device))
        if out.site is not None:
            self.recent_site = out.site

    def flush(self) -> dict[str, float] | None:
        """Move the pending losses into `history` (one wait for the device); the latest entry."""
        if self._pending:
            values = torch.stack([torch.stack([n.float(), r.float()]) for _, n, r in self._pending]).tolist()
            steps = [step for step, _, _ in self._pending]
            self.history.extend(
                {"step": step, "nll": nll, "recon": recon}
                for step, (nll, recon) in zip(steps, values, strict=True)
            )
            self._pending.clear()
        return self.history[-1] if self.history else None

    def show(self, bar: Any) -> None:
        """Flush, then put the latest loss, reconstruction error and dead-code share on the bar."""
        latest = self.flush()
        if latest is not None:
            bar.set_postfix(
                loss=f"{latest['nll']:.3f}", recon=f"{latest['recon']:.3f}", dead=f"{self.dead_share:.1%}"
            )

    @torch.no_grad()
    def recent_vectors(self) -> torch.Tensor | None:
        """Bottleneck inputs (N, d) at the content positions of the last cached batch."""
        if self.recent_site is None:
            return None
        site, content = self.recent_site
        return site[content].detach()

    @torch.no_grad()
    def reseed(
        self,
        codebook_model: CodebookModel,
        seed: int,
        parallel: DataParallel | None = None,
        kept: torch.Tensor | None = None,
    ) -> None:
        """Codes unused since the last call restart at recent inputs, so no code stays dead weight;
        codes `kept` (C,) bool never do (a label's reserved codes: recent inputs are other labels').

        Under data parallelism, usage is summed and recent inputs gathered over processes first, so
        every process re-seeds as one process would on the global batches.
        """
        parallel = parallel or DataParallel()
        self.usage = sum_counts(self.usage, parallel, codebook_model.device)
        recent = gather_rows(self.recent_vectors(), parallel)
        unused = self.usage == 0
        self.dead_share = int(unused.sum()) / self.usage.numel()
        if kept is not None:
            unused &= ~kept.to(unused.device)
        dead = torch.nonzero(unused).flatten()
        if dead.numel() and recent is not None and len(recent):
            generator = torch.Generator().manual_seed(seed)
            picks = torch.randint(len(recent), (dead.numel(),), generator=generator)
            vectors = recent[picks.to(recent.device)]
            noise = torch.randn(vectors.shape, generator=generator).to(vectors.device) * 0.01
            scale = codebook_model.bottleneck.codes.norm(dim=-1).mean() / vectors.norm(dim=-1, keepdim=True)
            codebook_model.bottleneck.reset_codes(dead.to(vectors.device), vectors * scale + noise * scale)
            log.debug("re-seeded %d dead codes", dead.numel())
        broadcast_from_main([codebook_model.bottleneck.codes], parallel)  # bitwise equal on every process
        self.usage.zero_()

    def result(self, tokens: int, elapsed_s: float) -> TrainResult:
        self.flush()
        last = self.history[-20:] or [{"nll": float("nan"), "recon": float("nan")}]
        return TrainResult(
            steps=self.step,
            tokens=tokens,
            elapsed_s=elapsed_s,
            final_loss=sum(h["nll"] for h in last) / len(last),
            final_recon=sum(h["recon"] for h in last) / len(last),
            dead_share=self.dead_share,
            history=self.history,
        )
