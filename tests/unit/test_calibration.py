"""Calibration's search: the smallest S' that clears both gates, found from the scores it is handed."""

from __future__ import annotations

import math

import pytest

from codeunlearn.core.config import CalibrationConfig, ConfigError
from codeunlearn.unlearning.calibration import Point, calibrate, candidate_sizes, frontier_markdown

GRID = [32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]


def curve(forget_at: dict[int, float] | None = None, retain_slope: float = 0.00005):
    """A topic whose forget drop grows with S' (0.8 reached at 256) and retain drop slowly."""
    scored = []

    def score(size: int) -> Point:
        scored.append(size)
        forget = forget_at[size] if forget_at else min(1.0, size / 320)
        return Point(size, forget, retain_slope * size, forget * 0.7, retain_slope * size * 0.5)

    return score, scored


def test_bisect_finds_the_smallest_passing_size_in_few_scores():
    score, scored = curve()
    result = calibrate(GRID, score, 0.8, 0.05)
    assert result.chosen is not None and result.chosen.n_select == 256
    assert len(scored) <= math.ceil(math.log2(len(GRID))) + 1
    assert [p.n_select for p in result.frontier] == sorted(scored)


def test_grid_search_scores_every_size_and_agrees_with_bisect():
    score, scored = curve()
    result = calibrate(GRID, score, 0.8, 0.05, search="grid")
    assert scored == GRID and result.chosen.n_select == 256


def test_retain_gate_rejects_with_the_nearest_miss_and_the_context():
    score, _ = curve(retain_slope=0.001)  # at 256: retain 0.256
    result = calibrate(GRID, score, 0.8, 0.05, describe="the topic has 140 forget examples")
    assert result.chosen is None and not result.passed
    assert result.best is not None and result.best.retain_drop <= 0.05
    assert result.reason.startswith(f"best validation point S' = {result.best.n_select}: forget drop")
    assert result.reason.endswith("the topic has 140 forget examples")


def test_a_topic_no_size_forgets_enough_is_rejected_at_its_largest_safe_size():
    score, scored = curve(forget_at={s: 0.3 for s in GRID}, retain_slope=0.00001)
    result = calibrate(GRID, score, 0.8, 0.05)
    assert result.chosen is None and scored == [1024]  # the largest size decides it at once
    assert "S' = 1024: forget drop 0.300 < 0.8" in result.reason

    score, scored = curve(forget_at={s: 0.3 for s in GRID})  # and 1024 breaks the retain gate
    result = calibrate(GRID, score, 0.8, 0.05)
    assert result.best.retain_drop <= 0.05 and scored[0] == 1024 and 768 in scored and len(scored) <= 5


@pytest.mark.parametrize("search", ["bisect", "grid"])
def test_a_margin_aims_past_the_gate_where_the_retain_gate_allows(search):
    score, scored = curve()  # forget = S' / 320: 0.8 at 256, 0.9 at 288; retain 0.00005 * S'
    grid = [*GRID, 288]
    grid.sort()
    plain = calibrate(grid, score, 0.8, 0.05, search=search)
    aimed = calibrate(grid, score, 0.8, 0.05, search=search, forget_margin=0.1)
    assert plain.chosen.n_select == 256 and aimed.chosen.n_select == 288
    assert aimed.chosen.forget_drop >= 0.9
    if search == "bisect":
        assert len(scored) <= 2 * (math.ceil(math.log2(len(grid))) + 1)


def test_a_margin_the_retain_gate_forbids_falls_back_to_the_plain_gates():
    score, scored = curve(retain_slope=0.00019)  # retain 0.049 at 256 (passes), 0.055 at 288 (fails)
    grid = sorted([*GRID, 288])
    result = calibrate(grid, score, 0.8, 0.05, forget_margin=0.1)
    assert result.chosen is not None and result.chosen.n_select == 256  # never rejected for the margin
    assert 288 in scored  # the aimed size was tried and shown on the frontier
    assert 288 in [p.n_select for p in result.frontier]


def test_a_margin_the_largest_mask_cannot_reach_still_takes_the_smallest_passing_size():
    score, _ = curve(forget_at={s: min(0.85, s / 320) for s in GRID})  # never 0.9
    assert calibrate(GRID, score, 0.8, 0.05, forget_margin=0.1).chosen.n_select == 256


def test_nan_drops_never_pass():
    result = calibrate([64], lambda s: Point(s, math.nan, 0.0, 0.0, 0.0), 0.8, 0.05)
    assert result.chosen is None and "forget drop nan < 0.8" in result.reason


def test_no_eligible_code_is_a_rejection_with_a_reason():
    result = calibrate([], lambda s: pytest.fail("nothing to score"), 0.8, 0.05)
    assert result.chosen is None and "mining thresholds" in result.reason


def test_candidate_sizes_stop_at_the_eligible_codes():
    assert candidate_sizes(GRID, 300) == [32, 48, 64, 96, 128, 192, 256, 300]
    assert candidate_sizes(GRID, 5000) == GRID
    assert candidate_sizes([64, 128], 128) == [64, 128]
    assert candidate_sizes(GRID, 0) == []


def test_the_frontier_table_marks_one_size_and_sets_its_test_drops_beside_it():
    frontier = [
        Point(4, 0.25, 0.01, 0.1, 0.0),
        Point(8, 0.9125, 0.031, 0.3, 0.01),
        Point(16, math.nan, 0.2, 0, 0),
    ]
    table = frontier_markdown(frontier, 8, "chosen", (0.874, 0.04)).splitlines()
    assert [cell.strip() for cell in table[0].strip("|").split("|")] == [
        "S'",
        "validation forget drop",
        "validation retain drop",
        "test forget drop",
        "test retain drop",
    ]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert rows == [
        ["4", "0.250", "0.010", "", ""],
        ["8 (chosen)", "0.912", "0.031", "0.874", "0.040"],
        ["16", "nan", "0.200", "", ""],
    ]
    assert len({len(line) for line in table}) == 1  # padded: the columns line up as plain text
    bare = frontier_markdown(frontier, None, "")
    assert "test" not in bare and "(" not in bare and len(bare.splitlines()) == 5


def test_a_point_reads_back_from_its_row_with_undefined_drops_as_nan():
    point = Point(8, math.nan, 0.5, 0.25, -0.125)
    row = {**point.row(), "forget_drop": None}  # as JSON without NaN writes it
    back = Point.from_row(row)
    assert back.n_select == 8 and math.isnan(back.forget_drop)
    assert (back.retain_drop, back.forget_nats, back.retain_nats) == (0.5, 0.25, -0.125)


def test_a_margin_outside_zero_to_one_is_refused_with_an_example():
    with pytest.raises(ConfigError, match=r"forget_margin=1.5: give a share in \[0, 1\), e.g. 0.1"):
        CalibrationConfig(forget_margin=1.5).validate()


def test_a_sweep_keyed_before_the_margin_existed_resumes_at_a_zero_margin_only():
    import dataclasses

    from codeunlearn.core.run_config import RunConfig
    from codeunlearn.pipeline.sweep import settings_key

    @dataclasses.dataclass(frozen=True)
    class CalibrationBeforeMargin:
        grid: tuple[int, ...] = CalibrationConfig().grid
        search: str = CalibrationConfig().search

    config = RunConfig()
    before = dataclasses.replace(config, calibration=CalibrationBeforeMargin())
    assert settings_key(before, "codebook") == settings_key(config, "codebook")
    aimed = dataclasses.replace(config, calibration=CalibrationConfig(forget_margin=0.1))
    assert settings_key(aimed, "codebook") != settings_key(config, "codebook")


def test_a_sweep_estimates_the_time_left_at_its_median_pace():
    from codeunlearn.pipeline.sweep import _time_left

    assert _time_left([60.0, 240.0, 90.0], 10) == "; about 15 min left"
    assert _time_left([60.0], 0) == ""
