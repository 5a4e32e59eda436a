"""Which codebook codes belong to a topic: per-code enrichment statistics and selection rules.

Everything here is a pure function of per-code firing counts: arrays in, arrays out, no files,
clocks or global state. A code "fires" at a token position when it is among that token's top-k codes,
so the per-code question is a 2x2 one: fired / not fired at a token position, on the forget set D_T
versus the control set.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from codeunlearn.core.config import MiningConfig
from codeunlearn.core.errors import CodeunlearnError, ConfigError

logger = logging.getLogger(__name__)

SelectionRule = Callable[["CodeCounts", "CodeCounts", MiningConfig], np.ndarray]
"""(forget, control, config) -> per-code score: higher is better, -inf for an ineligible code."""

_RULES: dict[str, SelectionRule] = {}
SELECTION_RULES: Mapping[str, SelectionRule] = MappingProxyType(_RULES)
"""Read-only view of the registered rules by name; add one with `@register_rule(name)`."""


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


@dataclass(frozen=True)
class SelectedCodes:
    """The codes a rule picked to mask.

    Attributes:
        code_ids: int64, sorted ascending.
        scores: the rule's score of each id, in the same order as `code_ids`.
        n_eligible: codes that passed the thresholds (may exceed `len(code_ids)`).
        rule: the name of the rule that scored them.
    """

    code_ids: np.ndarray
    scores: np.ndarray
    n_eligible: int
    rule: str


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


def _check_pair(forget: CodeCounts, control: CodeCounts) -> None:
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
    _check_pair(forget, control)
    return smoothed_rates(forget, pseudo_count) / smoothed_rates(control, pseudo_count)


def _chi2_statistic(forget: CodeCounts, control: CodeCounts) -> tuple[np.ndarray, np.ndarray]:
    """Yates-corrected chi-squared statistic of each code's 2x2 table, and where it is defined.

    Table per code: rows forget / control, columns fired / not fired (token positions).
    """
    _check_pair(forget, control)
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


def register_rule(name: str) -> Callable[[SelectionRule], SelectionRule]:
    """Decorator that adds a selection rule to `SELECTION_RULES` under `name`.

    Args:
        name: the value of `mining.rule` that picks this rule.

    Returns:
        The decorator; it returns the rule unchanged.

    Raises:
        CodeunlearnError: `name` is already registered.
    """

    def decorator(rule: SelectionRule) -> SelectionRule:
        if name in _RULES:
            raise CodeunlearnError(
                f"selection rule {name!r} is already registered (by {_RULES[name].__qualname__}): "
                "pick another name"
            )
        _RULES[name] = rule
        return rule

    return decorator


def get_rule(name: str) -> SelectionRule:
    """The registered rule called `name`.

    Raises:
        ConfigError: no rule has that name; the message lists the valid ones.
    """
    try:
        return _RULES[name]
    except KeyError:
        raise ConfigError(
            f"mining.rule={name!r} is not a selection rule: use one of {', '.join(sorted(_RULES))} "
            "(--mining.rule)"
        ) from None


def _eligible(
    forget: CodeCounts, control: CodeCounts, config: MiningConfig, enrich: np.ndarray | None = None
) -> np.ndarray:
    """Codes that pass all three thresholds of `config`."""
    enrich = enrichment(forget, control) if enrich is None else enrich
    return (
        (forget.token_counts >= config.min_count)
        & (chi2_p_values(forget, control) <= config.max_p_value)
        & (enrich >= config.min_enrichment)
    )


@register_rule("enrichment")
def enrichment_rule(forget: CodeCounts, control: CodeCounts, config: MiningConfig) -> np.ndarray:
    """Score = smoothed enrichment; -inf unless the code passes min_count, max_p_value, min_enrichment."""
    enrich = enrichment(forget, control)
    return np.where(_eligible(forget, control, config, enrich), enrich, -np.inf)


@register_rule("chi2")
def chi2_rule(forget: CodeCounts, control: CodeCounts, config: MiningConfig) -> np.ndarray:
    """Score = -log p of the chi-squared test, with the thresholds of the enrichment rule."""
    return np.where(_eligible(forget, control, config), chi2_neg_log_p(forget, control), -np.inf)


@register_rule("frequency")
def frequency_rule(forget: CodeCounts, control: CodeCounts, config: MiningConfig) -> np.ndarray:
    """Score = forget rate x log(enrichment): favours codes that are both enriched and frequent."""
    enrich = enrichment(forget, control)
    return np.where(_eligible(forget, control, config, enrich), forget.rates * np.log(enrich), -np.inf)


def _check_thresholds(config: MiningConfig) -> None:
    # MiningConfig.validate does not look at these; a wrong one silently makes every code ineligible.
    if config.min_count < 0:
        raise ConfigError(f"mining.min_count={config.min_count}: use 0 or more (--mining.min_count)")
    if not 0 < config.max_p_value <= 1:
        raise ConfigError(
            f"mining.max_p_value={config.max_p_value}: "
            "use a p-value in (0, 1], e.g. 1e-3 (--mining.max_p_value)"
        )
    if not config.min_enrichment >= 0:
        raise ConfigError(
            f"mining.min_enrichment={config.min_enrichment}: "
            "use 0 or more, e.g. 2.0 (--mining.min_enrichment)"
        )


def _no_eligible_message(forget: CodeCounts, control: CodeCounts, config: MiningConfig) -> str:
    """Why no code passed: how many pass each threshold alone, and the best value seen for each."""
    enrich = enrichment(forget, control)
    p_values = chi2_p_values(forget, control)
    n_codes = forget.n_codes
    n_count = int((forget.token_counts >= config.min_count).sum())
    n_p = int((p_values <= config.max_p_value).sum())
    n_enrich = int((enrich >= config.min_enrichment).sum())
    n_firing = int((forget.token_counts > 0).sum())
    if n_firing <= max(1, n_codes // 100):  # thresholds are not the problem: the codebook is
        return (
            f"no code passes the mining thresholds: only {n_firing} of {n_codes} codes fire on "
            f"{forget.n_tokens} forget tokens, so the codebook has collapsed in training and cannot "
            "separate topics. Retrain it: lower train.base_lr or train.lr, or use train.mode=above"
        )
    return (
        f"no code passes the mining thresholds (rule {config.rule!r}, {n_codes} codes, "
        f"{forget.n_tokens} forget / {control.n_tokens} control tokens): "
        f"{n_count} codes have forget count >= mining.min_count={config.min_count} "
        f"(max forget count {int(forget.token_counts.max(initial=0))}); "
        f"{n_p} have p <= mining.max_p_value={config.max_p_value:g} "
        f"(smallest p {p_values.min(initial=1.0):.3g}); "
        f"{n_enrich} have enrichment >= mining.min_enrichment={config.min_enrichment:g} "
        f"(best enrichment {enrich.max(initial=0.0):.3g}). "
        "Relax mining.min_count, mining.max_p_value or mining.min_enrichment, or mine on more forget "
        "examples (topic.max_forget)"
    )


def select_codes(forget: CodeCounts, control: CodeCounts, config: MiningConfig) -> SelectedCodes:
    """Pick the codes to mask for a topic with the rule and thresholds in `config`.

    With `config.n_select > 0` the top n_select eligible codes by score are taken (ties go to the lower
    code id, so the result is deterministic); with 0, every eligible code. Ineligible codes are never
    used to pad a short selection.

    Args:
        forget: counts on the forget set D_T.
        control: counts on the control set.
        config: rule name, n_select and thresholds.

    Returns:
        The selected ids (sorted ascending) with their scores.

    Raises:
        ConfigError: unknown rule, n_select larger than the codebook, or a threshold out of range.
        CodeunlearnError: no code is eligible (the message says which threshold to relax), or the
            counts do not fit together.
    """
    _check_pair(forget, control)
    config.validate(forget.n_codes)
    _check_thresholds(config)
    scores = np.asarray(get_rule(config.rule)(forget, control, config), dtype=np.float64)
    if scores.shape != (forget.n_codes,):
        raise CodeunlearnError(
            f"selection rule {config.rule!r} returned shape {scores.shape}, expected ({forget.n_codes},)"
        )
    # NaN compares false, so a NaN score counts as ineligible like -inf.
    eligible = np.flatnonzero(scores > -np.inf)
    if eligible.size == 0:
        raise CodeunlearnError(_no_eligible_message(forget, control, config))
    n_take = eligible.size if config.n_select == 0 else min(config.n_select, eligible.size)
    if n_take < config.n_select:
        logger.warning(
            "only %d codes pass the mining thresholds but mining.n_select=%d: masking those %d; "
            "relax mining.min_count / max_p_value / min_enrichment to get more",
            eligible.size,
            config.n_select,
            eligible.size,
        )
    # lexsort sorts by its last key first: score descending, then code id ascending.
    order = np.lexsort((eligible, -scores[eligible]))
    chosen = np.sort(eligible[order[:n_take]]).astype(np.int64)
    return SelectedCodes(
        code_ids=chosen, scores=scores[chosen], n_eligible=int(eligible.size), rule=config.rule
    )


def random_codes(n_codes: int, n_select: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """A random set of codes of the same size as a selection, for the random-mask control.

    Args:
        n_codes: codebook size C.
        n_select: how many codes to draw, without replacement.
        seed: the draw is a function of (n_codes, n_select, seed, exclude) only.
        exclude: code ids never drawn (e.g. the mined topic codes).

    Returns:
        int64 array of n_select distinct ids, sorted ascending.

    Raises:
        ConfigError: n_select is negative or larger than the codes left after exclusion, or an
            excluded id is out of range.
    """
    if n_codes < 1:
        raise ConfigError(f"n_codes={n_codes}: the codebook needs at least one code")
    excluded = np.zeros(n_codes, dtype=bool)
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64).ravel()
        bad = exclude[(exclude < 0) | (exclude >= n_codes)]
        if bad.size:
            raise ConfigError(
                f"exclude holds code id {int(bad[0])}, outside the codebook of {n_codes} codes: "
                f"pass ids between 0 and {n_codes - 1}"
            )
        excluded[exclude] = True
    candidates = np.flatnonzero(~excluded)
    if not 0 <= n_select <= candidates.size:
        raise ConfigError(
            f"random mask of n_select={n_select} codes, but only {candidates.size} of {n_codes} codes "
            f"are left after excluding {int(excluded.sum())}: use n_select between 0 and {candidates.size}"
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=n_select, replace=False)).astype(np.int64)
