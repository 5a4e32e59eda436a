"""Membership inference: does a model still tell the forget set from text it never saw?

Pure metrics on per-token log-probabilities (numpy in, floats out) plus one function that computes
those log-probabilities from a model. Every score follows one convention: higher means "more like a
training member", so an AUC of 0.5 means the attacker cannot tell members from non-members.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.data.batching import Batch, token_nll

LogitsFn = Callable[[Batch], torch.Tensor]
"""Batch -> next-token logits (B, T, V), e.g. a codebook model's layers above the bottleneck."""


def roc_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """Probability that a random member scores higher than a random non-member (ties count 1/2).

    This is the Mann-Whitney U statistic over all member x non-member pairs divided by their number,
    computed by binary search in O((m + n) log n) rather than over the m x n pairs.

    Args:
        member_scores: one score per member example, higher = more member-like.
        nonmember_scores: one score per non-member example.
    Returns:
        The ROC AUC in [0, 1]; 0.5 when the scores do not separate the sets.
    Raises:
        CodeunlearnError: either set is empty or holds a NaN.
    """
    members = np.asarray(member_scores, dtype=np.float64).ravel()
    nonmembers = np.sort(np.asarray(nonmember_scores, dtype=np.float64).ravel())
    for name, scores in (("member_scores", members), ("nonmember_scores", nonmembers)):
        if scores.size == 0:
            raise CodeunlearnError(f"{name} is empty: an AUC needs at least one member and one non-member")
        if np.isnan(scores).any():
            raise CodeunlearnError(f"{name} holds {int(np.isnan(scores).sum())} NaN scores: drop them first")
    below = np.searchsorted(nonmembers, members, side="left")  # non-members strictly lower, per member
    tied = np.searchsorted(nonmembers, members, side="right") - below
    return float((below.sum() + 0.5 * tied.sum()) / (members.size * nonmembers.size))


def _as_logits_fn(scorer: nn.Module | LogitsFn) -> LogitsFn:
    if not isinstance(scorer, nn.Module):
        return scorer
    device = next(scorer.parameters()).device
    return lambda batch: (
        scorer(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)).logits
    )


@torch.no_grad()
def per_token_logprobs(scorer: nn.Module | LogitsFn, batches: Sequence[Batch]) -> list[np.ndarray]:
    """Log-probability of each real next token, per example, in input order.

    Uses `batching.token_nll`, as the evaluator does: position t scores token t+1, the BOS token is
    never scored, and padding is cut off. The model's train/eval mode is left as the caller set it.

    Args:
        scorer: a causal LM (called as `model(input_ids=..., attention_mask=...).logits`), or any
            `logits_of(batch) -> (B, T, V)` callable, e.g. a masked codebook model run from cached
            hidden states. A codebook model with a mask applied can also be passed as its `.model`.
        batches: from one `make_batches` call, so their `rows` number the examples 0..n-1.
    Returns:
        n float64 arrays; array i has length (tokens of example i) - 1.
    Raises:
        CodeunlearnError: the batches' rows do not number the examples 0..n-1 exactly once.
    """
    logits_of = _as_logits_fn(scorer)
    n_rows = sum(len(batch.rows) for batch in batches)
    logprobs: list[np.ndarray | None] = [None] * n_rows
    for batch in batches:
        logits = logits_of(batch)
        token_logprobs = -token_nll(logits, batch.to(logits.device)).double().cpu().numpy()  # (B, T-1)
        lengths = batch.attention_mask[:, 1:].sum(1).tolist()  # right padding: real tokens come first
        for row, values, length in zip(batch.rows.tolist(), token_logprobs, lengths, strict=True):
            if not 0 <= row < n_rows or logprobs[row] is not None:
                raise CodeunlearnError(
                    f"batch row {row} is repeated or outside 0..{n_rows - 1}: pass the batches of one "
                    "make_batches call (score each set of examples separately)"
                )
            logprobs[row] = values[:length]
    return logprobs  # every slot is filled: n_rows distinct rows in range


def _checked(logprobs: Sequence[np.ndarray]) -> list[np.ndarray]:
    arrays = [np.asarray(values, dtype=np.float64) for values in logprobs]
    empty = [i for i, values in enumerate(arrays) if values.size == 0]
    if empty:
        raise CodeunlearnError(
            f"{len(empty)} examples have no scored token (e.g. example {empty[0]}): an example needs "
            "at least one token after BOS; drop shorter examples before scoring"
        )
    return arrays


def loss_scores(logprobs: Sequence[np.ndarray]) -> np.ndarray:
    """Mean token log-prob per example (the LOSS attack: members have lower loss, so higher scores).

    Raises:
        CodeunlearnError: an example has no scored token.
    """
    return np.array([values.mean() for values in _checked(logprobs)])


def min_k_scores(logprobs: Sequence[np.ndarray], k: float = 0.2) -> np.ndarray:
    """Min-K% Prob (Shi et al. 2024): mean of the lowest `k` share of each example's token log-probs.

    The rarest tokens carry the membership signal: a model that saw a text gives none of its tokens a
    very low probability. At least one token is used, so short examples still get a score.

    Raises:
        CodeunlearnError: `k` is outside (0, 1], or an example has no scored token.
    """
    if not 0 < k <= 1:
        raise CodeunlearnError(f"min-k fraction k={k}: use a share of tokens in (0, 1], e.g. 0.2")
    scores = []
    for values in _checked(logprobs):
        n_lowest = max(1, int(k * values.size))
        scores.append(np.sort(values)[:n_lowest].mean())
    return np.array(scores)


_METHODS: dict[str, Callable[[Sequence[np.ndarray], float], np.ndarray]] = {
    "loss": lambda logprobs, _k: loss_scores(logprobs),
    "min_k": min_k_scores,
}


def mia_auc(
    member_logprobs: Sequence[np.ndarray],
    nonmember_logprobs: Sequence[np.ndarray],
    method: str = "loss",
    k: float = 0.2,
) -> float:
    """AUC of a membership-inference attack that scores examples by `method` ("loss" or "min_k").

    Raises:
        CodeunlearnError: an unknown method (the valid ones are listed), or bad inputs to the scores.
    """
    if method not in _METHODS:
        raise CodeunlearnError(f"MIA method {method!r} is unknown: use one of {', '.join(sorted(_METHODS))}")
    score = _METHODS[method]
    return roc_auc(score(member_logprobs, k), score(nonmember_logprobs, k))


def privleak(auc_unlearned: float, auc_retrained: float) -> float:
    """MUSE PrivLeak: relative gap of the unlearned model's MIA AUC to a model never trained on the set.

    0 is ideal; negative means the forget set looks *less* familiar than to a never-trained model
    (over-unlearning, itself a leak); positive means it still looks familiar. MUSE prints it as a
    percentage; this returns the fraction.

    Raises:
        CodeunlearnError: `auc_retrained` is not positive.
    """
    if not auc_retrained > 0:
        raise CodeunlearnError(f"auc_retrained={auc_retrained}: PrivLeak divides by it, so it must be > 0")
    return (auc_unlearned - auc_retrained) / auc_retrained
