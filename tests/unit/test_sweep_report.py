"""What stopped a topic, read from its sweep row: the limits the sweep's table and summary count."""

from __future__ import annotations

import math

from codeunlearn.pipeline.sweep_report import LIMITS, limit, summary, to_markdown, with_limits

GATES = {"min_forget_drop": 0.8, "max_retain_drop": 0.05, "max_random_share": 0.2}


def rejected(frontier: list[tuple[int, float, float]], n_eligible: int, **row) -> dict:
    points = [{"n_select": n, "forget_drop": f, "retain_drop": r} for n, f, r in frontier]
    best = max((p for p in points if p["retain_drop"] <= 0.05), key=lambda p: p["forget_drop"])
    return {
        "status": "rejected",
        "frontier": points,
        "n_eligible": n_eligible,
        "best_n_select": best["n_select"],
        **row,
    }


def test_a_topic_that_masked_every_eligible_code_within_the_retain_gate_ran_out_of_codes():
    assert limit(rejected([(32, 0.2, 0.01), (33, 0.25, 0.01)], 33), GATES) == "out of codes"


def test_a_topic_whose_larger_mask_broke_the_retain_gate_is_stopped_by_it():
    assert limit(rejected([(64, 0.5, 0.03), (96, 0.9, 0.07)], 140), GATES) == "retain gate"


def test_a_topic_the_grid_stops_short_of_its_eligible_codes_is_stopped_by_the_forget_gate():
    assert limit(rejected([(1024, 0.4, 0.01), (2048, 0.6, 0.02)], 3000), GATES) == "forget gate"


def test_no_eligible_code_and_not_learned_are_their_own_limits():
    assert limit({"status": "rejected", "n_eligible": 0, "frontier": []}, GATES) == "no codes"
    assert limit({"status": "not_learned", "n_eligible": 40}, GATES) == "not learned"


def test_a_topic_that_failed_on_test_names_every_gate_the_test_split_broke():
    row = {"status": "failed", "forget_drop": 0.74, "retain_drop": 0.06, "random_share": 0.05}
    assert limit(row, GATES) == "test forget+test retain"
    row = {"status": "failed", "forget_drop": 0.9, "retain_drop": 0.01, "random_share": 0.3}
    assert limit(row, GATES) == "random control"
    assert limit({"status": "failed", "forget_drop": math.nan}, GATES) == "test"


def test_the_summary_and_table_count_each_limit_and_explain_it():
    rows = with_limits(
        [
            {"topic": "a", "status": "passed", "forget_drop": 0.9, "retain_drop": 0.01, "seconds": 60},
            {"topic": "b", **rejected([(33, 0.2, 0.01)], 33), "seconds": 50},
            {"topic": "c", **rejected([(40, 0.1, 0.01)], 40), "seconds": 70},
        ],
        GATES,
    )
    totals = summary(rows, "corpus", "cb", None)
    assert totals["limits"] == {"out of codes": 2} and totals["passed"] == 1
    markdown = to_markdown(rows, totals)
    assert f"- out of codes (2): {LIMITS['out of codes']}" in markdown
    assert "| a | passed |  |" in markdown and "| b | rejected | out of codes |" in markdown
