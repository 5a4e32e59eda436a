"""Attacks on an unlearned model: relearning (a few fine-tuning steps on the forgotten topic).

A mask is only as strong as its removal: the attacker fine-tunes every weight on forget-topic text with
the mask still in force and we watch how fast the forget NLL comes back down.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from codeunlearn.data.batching import Batch, token_nll
from codeunlearn.evaluation.evaluator import EvalSet, Evaluator
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.unlearning.masks import Mask, apply_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelearnPoint:
    steps: int
    forget_nll: float
    recovery: float  # 0: as unlearned; 1: back to the codebook model's forget NLL; NaN when the
    # unlearning itself moved the forget NLL by under 0.01 nats (nothing to recover)


def relearning_curve(
    model: CodebookModel,
    mask: Mask | None,
    attack_batches: Sequence[Batch],
    forget_set: EvalSet,
    checkpoints: Sequence[int],
    codebook_forget_nll: float,
    lr: float = 1e-5,
    seed: int = 0,
) -> list[RelearnPoint]:
    """Fine-tune `model` in place (mask in force) on `attack_batches`, cycling them, and score the
    held-out `forget_set` before the attack and after each number of steps in `checkpoints`."""
    apply_mask(model, mask)
    torch.manual_seed(seed)
    parameters = list(model.model.parameters())
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    points, done = [], 0
    unlearned = None
    try:
        for target in sorted(set(checkpoints) | {0}):  # step 0 is the unlearned model itself
            while done < target:
                _step(model, attack_batches[done % len(attack_batches)], optimizer)
                done += 1
            nll = Evaluator(model, [forget_set]).score_codebook(mask)[forget_set.name]
            apply_mask(model, mask)  # scoring clears the mask; the attack goes on with it in force
            unlearned = nll if unlearned is None else unlearned
            gap = unlearned - codebook_forget_nll
            points.append(
                RelearnPoint(target, nll, (unlearned - nll) / gap if abs(gap) > 1e-2 else float("nan"))
            )
            log.info("relearning: %d steps, forget NLL %.4f", target, nll)
    finally:
        apply_mask(model, None)
        model.model.eval()
    return points


def _step(model: CodebookModel, batch: Batch, optimizer: torch.optim.Optimizer) -> None:
    batch = batch.to(model.device)
    model.model.train()
    logits = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    loss = token_nll(logits, batch).sum() / batch.attention_mask[:, 1:].sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
