"""Per-code firing counts and their statistics: enrichment and the chi-squared test of forget vs control.

Everything here is a pure function of per-code firing counts: arrays in, arrays out, no files,
clocks or global state. A code "fires" at a token position when it is among that token's top-k codes,
so the per-code question is a 2x2 one: fired / not fired at a token position, on the forget set D_T
versus the control set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from codeunlearn.core.errors import CodeunlearnError


@dataclass(frozen=True)
class CodeCounts:
    """How often each code fired on one set of examples.

    The arrays are copied to int64 and made read-only, so a `CodeCounts` cannot change after it is
    built.

    Attributes:
        token_counts: shape (C,), token positions where the code was among the chosen top-k.
        example_counts: shape (C,), examples where the code fired at least once.
        n_tokens: token positions counted.
        n_examples: examples counted.
    """

    token_counts: np.ndarray
    example_counts: np.ndarray
    n_tokens: int
    n_examples: int

    def __post_init__(self) -> None:
        token_counts = _as_count_array(self.token_counts, "token_counts")
        example_counts = _as_count_array(self.example_counts, "example_counts")
        if token_counts.shape != example_counts.shape:
            raise CodeunlearnError(
                f"CodeCounts: token_counts has shape {token_counts.shape} but example_counts has shape "
                f"{example_counts.shape}: both must hold one entry per code"
            )
        for name in ("n_tokens", "n_examples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise CodeunlearnError(f"CodeCounts: {name}={value!r}: it must be a non-negative integer")
        _check_bounded(token_counts, int(self.n_tokens), "token_counts", "n_tokens")
        _check_bounded(example_counts, int(self.n_examples), "example_counts", "n_examples")
        # A code that fired in an example fired at one token position of it at least.
        _check_bounded(example_counts, token_counts, "example_counts", "token_counts")
        object.__setattr__(self, "token_counts", token_counts)
        object.__setattr__(self, "example_counts", example_counts)
        object.__setattr__(self, "n_tokens", int(self.n_tokens))
        object.__setattr__(self, "n_examples", int(self.n_examples))

    @property
    def n_codes(self) -> int:
        """C, the codebook size."""
        return int(self.token_counts.shape[0])

    @property
    def rates(self) -> np.ndarray:
        """Per-code firing rate, token_counts / n_tokens (zeros when no token was counted)."""
        return self.token_counts / max(self.n_tokens, 1)


def _as_count_array(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise CodeunlearnError(
            f"CodeCounts: {name} has shape {array.shape}: pass a 1-D array with one count per code"
        )
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise CodeunlearnError(
            f"CodeCounts: {name} has dtype {array.dtype}: "
            "pass integer counts (int64), e.g. np.bincount output"
        )
    array = array.astype(np.int64, copy=True)
    if array.size and array.min() < 0:
        raise CodeunlearnError(
            f"CodeCounts: {name} has a negative count ({array.min()} at code {int(array.argmin())}): "
            "counts must be >= 0"
        )
    array.flags.writeable = False
    return array


def _check_bounded(values: np.ndarray, bound: int | np.ndarray, name: str, bound_name: str) -> None:
    over = np.flatnonzero(values > bound)
    if over.size:
        code = int(over[0])
        limit = (
            f"{bound_name}={bound}" if isinstance(bound, int) else f"{bound_name}[{code}]={int(bound[code])}"
        )
        raise CodeunlearnError(
            f"CodeCounts: {name}[{code}]={int(values[code])} exceeds {limit} ({over.size} codes do): "
            "the counts and totals come from different sets or were summed wrongly"
        )


def check_pair(forget: CodeCounts, control: CodeCounts) -> None:
    """Raise unless both sets were counted with the same codebook and neither is empty."""
    if forget.n_codes != control.n_codes:
        raise CodeunlearnError(
            f"forget counts cover {forget.n_codes} codes but control counts cover {control.n_codes}: "
            "count both sets with the same codebook"
        )
    for name, counts in (("forget", forget), ("control", control)):
        if counts.n_tokens == 0:
            raise CodeunlearnError(
                f"the {name} set has n_tokens=0: no token positions were counted; "
                f"check that the {name} examples are non-empty"
            )


def smoothed_rates(counts: CodeCounts, pseudo_count: float = 0.5) -> np.ndarray:
    """Per-code firing rate with add-`pseudo_count` smoothing of the fired / not-fired proportion.

    Args:
        counts: counts of one set.
        pseudo_count: added to both the fired and the not-fired count of every code.

    Returns:
        float64 array (C,): (token_counts + a) / (n_tokens + 2a).
    """
    return (counts.token_counts + pseudo_count) / (counts.n_tokens + 2.0 * pseudo_count)


def enrichment(forget: CodeCounts, control: CodeCounts, pseudo_count: float = 0.5) -> np.ndarray:
    """Per-code ratio of smoothed firing rates, forget over control.

    Smoothing keeps a code that never fires on the control set finite: its enrichment grows with
    its forget count instead of being infinite for every such code.

    Args:
        forget: counts on the forget set D_T.
        control: counts on the control set.
        pseudo_count: additive smoothing, see `smoothed_rates`; must be > 0.

    Returns:
        float64 array (C,); 1 means the code fires equally often on both sets.

    Raises:
        CodeunlearnError: the sets have different codebook sizes, one of them is empty, or
            pseudo_count is not positive.
    """
    if not pseudo_count > 0 or not math.isfinite(pseudo_count):
        raise CodeunlearnError(
            f"pseudo_count={pseudo_count!r}: it must be a positive finite number (0.5 is the usual choice)"
        )
    check_pair(forget, control)
    return smoothed_rates(forget, pseudo_count) / smoothed_rates(control, pseudo_count)


def _chi2_statistic(forget: CodeCounts, control: CodeCounts) -> tuple[np.ndarray, np.ndarray]:
    """Yates-corrected chi-squared statistic of each code's 2x2 table, and where it is defined.

    Table per code: rows forget / control, columns fired / not fired (token positions).
    """
    check_pair(forget, control)
    a = forget.token_counts
    b = forget.n_tokens - a
    c = control.token_counts
    d = control.n_tokens - c
    total = float(forget.n_tokens + control.n_tokens)
    # a*d - b*c in int64 is exact for counts below ~3e9; in float64 it would lose digits above 2**53.
    diff = np.abs(a * d - b * c).astype(np.float64)
    corrected = np.maximum(diff - total / 2.0, 0.0)
    denominator = (
        float(forget.n_tokens)
        * float(control.n_tokens)
        * (a + c).astype(np.float64)
        * (b + d).astype(np.float64)
    )
    # A code that fires nowhere (or everywhere) has an empty margin: no evidence, p = 1.
    defined = denominator > 0
    statistic = np.zeros(a.shape, dtype=np.float64)
    statistic[defined] = total * corrected[defined] ** 2 / denominator[defined]
    return statistic, defined


def chi2_p_values(forget: CodeCounts, control: CodeCounts) -> np.ndarray:
    """Per-code p-value of a 2x2 chi-squared test (Yates-corrected), fired vs not fired, forget vs control.

    Same value as `scipy.stats.chi2_contingency(table, correction=True)` per code, but vectorised.
    The test is two-sided: a code depleted on the forget set gets a small p too.

    Args:
        forget: counts on the forget set D_T.
        control: counts on the control set.

    Returns:
        float64 array (C,) of p-values; 1 for codes that fire on no (or on every) token position.

    Raises:
        CodeunlearnError: the sets have different codebook sizes or one of them is empty.
    """
    import torch  # torch.special, not scipy: mining must run where only torch and transformers are

    statistic, defined = _chi2_statistic(forget, control)
    p_values = np.ones_like(statistic)
    # one degree of freedom: sf(x) = erfc(sqrt(x / 2))
    p_values[defined] = torch.special.erfc(torch.from_numpy(np.sqrt(statistic[defined] / 2))).numpy()
    return p_values


def chi2_neg_log_p(forget: CodeCounts, control: CodeCounts) -> np.ndarray:
    """-log of `chi2_p_values`, computed without underflow.

    p underflows to 0 for statistics above ~1500, which would tie every strongly enriched code;
    for one degree of freedom sf(x) = 2 * Phi(-sqrt(x)), whose log `log_ndtr` keeps finite.

    Returns:
        float64 array (C,), >= 0; 0 where the test is undefined.
    """
    import torch

    statistic, defined = _chi2_statistic(forget, control)
    neg_log_p = np.zeros_like(statistic)
    log_tail = torch.special.log_ndtr(torch.from_numpy(-np.sqrt(statistic[defined]))).numpy()
    neg_log_p[defined] = -(math.log(2.0) + log_tail)
    return np.maximum(neg_log_p, 0.0)
