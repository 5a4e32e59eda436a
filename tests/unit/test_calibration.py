"""Calibration's search: the smallest S' that clears both gates, found from the scores it is handed."""

from __future__ import annotations

import math

import pytest

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
