"""Which codebook codes belong to a topic: the registry of selection rules, the thresholds every rule
applies, and the pick of the codes to mask (or of a random set of the same size).

Pure functions of per-code firing counts (codeunlearn.unlearning.code_statistics): arrays in, arrays
out, no files, clocks or global state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from codeunlearn.core.config import MiningConfig
from codeunlearn.core.errors import CodeunlearnError, ConfigError
from codeunlearn.unlearning.code_statistics import (
    CodeCounts,
    check_pair,
    chi2_neg_log_p,
    chi2_p_values,
    enrichment,
)

logger = logging.getLogger(__name__)

SelectionRule = Callable[["CodeCounts", "CodeCounts", MiningConfig], np.ndarray]
"""(forget, control, config) -> per-code score: higher is better, -inf for an ineligible code."""

_RULES: dict[str, SelectionRule] = {}
SELECTION_RULES: Mapping[str, SelectionRule] = MappingProxyType(_RULES)
"""Read-only view of the registered rules by name; add one with `@register_rule(name)`."""


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
    check_pair(forget, control)
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
