"""Per-code statistics and selection rules on tiny hand-checkable counts."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from codeunlearn.core.config import MiningConfig
from codeunlearn.core.errors import CodeunlearnError, ConfigError
from codeunlearn.unlearning.selection import (
    SELECTION_RULES,
    CodeCounts,
    chi2_neg_log_p,
    chi2_p_values,
    enrichment,
    random_codes,
    register_rule,
    select_codes,
)


def counts(tokens: list[int], n_tokens: int, n_examples: int = 50) -> CodeCounts:
    token_counts = np.array(tokens, dtype=np.int64)
    return CodeCounts(token_counts, np.minimum(token_counts, n_examples), n_tokens, n_examples)


# code:            0    1   2  3    4  5   6   7
FORGET = counts([100, 100, 50, 3, 200, 0, 10, 60], 1000)
CONTROL = counts([10, 10, 50, 0, 5, 0, 100, 20], 1000)


def config(**overrides: object) -> MiningConfig:
    values: dict[str, object] = {"n_select": 3, "min_count": 5, "max_p_value": 1e-3, "min_enrichment": 2.0}
    values.update(overrides)
    return MiningConfig(**values)  # type: ignore[arg-type]


def test_enrichment_matches_hand_computation() -> None:
    forget = counts([4, 0, 10], n_tokens=10, n_examples=2)
    control = counts([2, 0, 0], n_tokens=20, n_examples=2)
    # (f + 0.5) / (10 + 1) over (c + 0.5) / (20 + 1)
    expected = [(4.5 / 11) / (2.5 / 21), (0.5 / 11) / (0.5 / 21), (10.5 / 11) / (0.5 / 21)]
    np.testing.assert_allclose(enrichment(forget, control), expected, rtol=1e-12)


def test_enrichment_is_finite_when_control_is_zero() -> None:
    values = enrichment(FORGET, CONTROL)
    assert np.all(np.isfinite(values))
    assert values[3] > 1  # fired 3 times on forget, never on control


@pytest.mark.parametrize("pseudo_count", [0.0, -1.0, math.inf, math.nan])
def test_enrichment_rejects_bad_pseudo_count(pseudo_count: float) -> None:
    with pytest.raises(CodeunlearnError, match="pseudo_count"):
        enrichment(FORGET, CONTROL, pseudo_count)


@pytest.mark.parametrize("code", [0, 2, 3, 4, 6, 7])
def test_chi2_matches_scipy_contingency(code: int) -> None:
    table = [
        [FORGET.token_counts[code], FORGET.n_tokens - FORGET.token_counts[code]],
        [CONTROL.token_counts[code], CONTROL.n_tokens - CONTROL.token_counts[code]],
    ]
    expected = chi2_contingency(table, correction=True).pvalue
    assert chi2_p_values(FORGET, CONTROL)[code] == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_chi2_yates_clips_small_differences() -> None:
    # |o - e| = 0.25 < 0.5: Yates clips the difference to 0, so p = 1 (as scipy does).
    forget = counts([1], n_tokens=4, n_examples=1)
    control = counts([0], n_tokens=4, n_examples=1)
    table = [[1, 3], [0, 4]]
    assert chi2_p_values(forget, control)[0] == pytest.approx(chi2_contingency(table).pvalue)


def test_chi2_codes_firing_nowhere_get_p_one() -> None:
    assert chi2_p_values(FORGET, CONTROL)[5] == 1.0
    everywhere = counts([10], n_tokens=10, n_examples=1)
    assert chi2_p_values(everywhere, counts([20], n_tokens=20, n_examples=1))[0] == 1.0


def test_chi2_neg_log_p_is_minus_log_p_and_never_infinite() -> None:
    p_values = chi2_p_values(FORGET, CONTROL)
    np.testing.assert_allclose(chi2_neg_log_p(FORGET, CONTROL), -np.log(p_values), rtol=1e-9, atol=1e-12)
    huge_forget = counts([900_000], n_tokens=1_000_000)
    huge_control = counts([1], n_tokens=1_000_000)
    assert chi2_p_values(huge_forget, huge_control)[0] == 0.0  # underflows
    assert np.isfinite(chi2_neg_log_p(huge_forget, huge_control)[0])


def test_counts_validation() -> None:
    with pytest.raises(CodeunlearnError, match="dtype float64"):
        CodeCounts(np.array([1.0]), np.array([1]), 1, 1)
    with pytest.raises(CodeunlearnError, match="shape"):
        CodeCounts(np.array([1, 2]), np.array([1]), 5, 5)
    with pytest.raises(CodeunlearnError, match="1-D"):
        CodeCounts(np.ones((2, 2), dtype=np.int64), np.ones((2, 2), dtype=np.int64), 5, 5)
    with pytest.raises(CodeunlearnError, match="negative"):
        CodeCounts(np.array([-1]), np.array([0]), 5, 5)
    with pytest.raises(CodeunlearnError, match=r"token_counts\[0\]=6 exceeds n_tokens=5"):
        CodeCounts(np.array([6]), np.array([1]), 5, 5)
    with pytest.raises(CodeunlearnError, match=r"example_counts\[0\]=2 exceeds token_counts\[0\]=1"):
        CodeCounts(np.array([1]), np.array([2]), 5, 5)
    with pytest.raises(CodeunlearnError, match="codebook"):
        enrichment(counts([1, 2], 10), counts([1], 10))
    with pytest.raises(CodeunlearnError, match="n_tokens=0"):
        chi2_p_values(counts([0], 10), counts([0], 0, 0))


def test_counts_are_int64_copies_and_read_only() -> None:
    source = np.array([1, 2], dtype=np.int32)
    built = CodeCounts(source, source, 5, 5)
    assert built.token_counts.dtype == np.int64
    source[0] = 3
    assert built.token_counts[0] == 1
    with pytest.raises(ValueError):
        built.token_counts[0] = 4


def test_select_codes_enrichment_top_n_with_id_tie_break() -> None:
    selected = select_codes(FORGET, CONTROL, config(n_select=2))
    # Code 4 is best; codes 0 and 1 tie exactly, and the lower id wins.
    assert selected.code_ids.tolist() == [0, 4]
    assert selected.code_ids.dtype == np.int64
    np.testing.assert_allclose(selected.scores, enrichment(FORGET, CONTROL)[[0, 4]])
    assert selected.n_eligible == 4  # 0, 1, 4, 7
    assert selected.rule == "enrichment"


def test_select_codes_is_deterministic() -> None:
    first = select_codes(FORGET, CONTROL, config())
    second = select_codes(FORGET, CONTROL, config())
    np.testing.assert_array_equal(first.code_ids, second.code_ids)
    np.testing.assert_array_equal(first.scores, second.scores)


def test_select_codes_threshold_mode_takes_all_eligible() -> None:
    selected = select_codes(FORGET, CONTROL, config(n_select=0))
    # 2: not enriched; 3: below min_count; 5: never fires; 6: depleted.
    assert selected.code_ids.tolist() == [0, 1, 4, 7]
    assert selected.n_eligible == 4


@pytest.mark.parametrize("rule", ["chi2", "frequency"])
def test_other_rules_share_the_eligibility(rule: str) -> None:
    selected = select_codes(FORGET, CONTROL, config(rule=rule, n_select=0))
    assert selected.code_ids.tolist() == [0, 1, 4, 7]
    assert selected.rule == rule


def test_chi2_and_frequency_rule_scores() -> None:
    eligible = [0, 1, 4, 7]
    chi2_scores = SELECTION_RULES["chi2"](FORGET, CONTROL, config())
    np.testing.assert_allclose(chi2_scores[eligible], chi2_neg_log_p(FORGET, CONTROL)[eligible])
    frequency = SELECTION_RULES["frequency"](FORGET, CONTROL, config())
    expected = FORGET.token_counts / FORGET.n_tokens * np.log(enrichment(FORGET, CONTROL))
    np.testing.assert_allclose(frequency[eligible], expected[eligible])
    assert np.all(frequency[[2, 3, 5, 6]] == -np.inf)


def test_fewer_eligible_than_n_select_warns_and_does_not_pad(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="codeunlearn.unlearning.selection"):
        selected = select_codes(FORGET, CONTROL, config(n_select=6))
    assert selected.code_ids.tolist() == [0, 1, 4, 7]
    assert "only 4 codes pass" in caplog.text


def test_n_select_larger_than_codebook_raises() -> None:
    with pytest.raises(ConfigError, match="mining.n_select=9, but the codebook has 8 codes"):
        select_codes(FORGET, CONTROL, config(n_select=9))


def test_no_eligible_code_explains_which_threshold_to_relax() -> None:
    with pytest.raises(CodeunlearnError) as raised:
        select_codes(FORGET, CONTROL, config(min_enrichment=1000.0))
    message = str(raised.value)
    for text in (
        "min_count=5",
        "max_p_value=0.001",
        "min_enrichment=1000",
        "max forget count 200",
        "best enrichment",
    ):
        assert text in message
    best = f"{enrichment(FORGET, CONTROL).max():.3g}"
    assert best in message


def test_bad_thresholds_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="max_p_value"):
        select_codes(FORGET, CONTROL, config(max_p_value=0.0))
    with pytest.raises(ConfigError, match="min_count"):
        select_codes(FORGET, CONTROL, config(min_count=-1))


def test_unknown_rule_lists_valid_rules() -> None:
    with pytest.raises(ConfigError, match="chi2, enrichment, frequency"):
        select_codes(FORGET, CONTROL, config(rule="nope"))


def test_register_rule_rejects_duplicates_and_adds_new_rules() -> None:
    with pytest.raises(CodeunlearnError, match="already registered"):
        register_rule("enrichment")(lambda forget, control, cfg: forget.rates)
    try:
        register_rule("test_rates")(lambda forget, control, cfg: forget.rates.astype(np.float64))
        selected = select_codes(FORGET, CONTROL, config(rule="test_rates", n_select=1))
        assert selected.code_ids.tolist() == [4]
    finally:
        from codeunlearn.unlearning import selection

        selection._RULES.pop("test_rates", None)
    with pytest.raises(TypeError):
        SELECTION_RULES["x"] = None  # type: ignore[index]


def test_random_codes_deterministic_sorted_and_excluding() -> None:
    first = random_codes(100, 10, seed=7)
    assert first.dtype == np.int64
    assert np.array_equal(first, random_codes(100, 10, seed=7))
    assert np.all(np.diff(first) > 0)
    assert not np.array_equal(first, random_codes(100, 10, seed=8))
    exclude = np.arange(0, 100, 2)
    drawn = random_codes(100, 50, seed=1, exclude=exclude)
    assert drawn.tolist() == list(range(1, 100, 2))  # all that is left
    with pytest.raises(ConfigError, match="only 50 of 100 codes"):
        random_codes(100, 51, seed=1, exclude=exclude)
    with pytest.raises(ConfigError, match="outside the codebook"):
        random_codes(10, 1, seed=1, exclude=np.array([10]))


def test_no_eligible_code_names_a_collapsed_codebook_apart_from_strict_thresholds() -> None:
    collapsed = counts([0] * 150 + [1000] + [0] * 49, 1000)  # one code of 200 fires on every token
    with pytest.raises(CodeunlearnError, match=r"only 1 of 200 codes fire on 1000 forget tokens.*collapsed"):
        select_codes(collapsed, collapsed, config())
    with pytest.raises(CodeunlearnError, match=r"no code passes the mining thresholds \(rule") as caught:
        select_codes(FORGET, CONTROL, config(min_count=10_000))
    assert "collapsed" not in str(caught.value) and "Relax mining.min_count" in str(caught.value)
