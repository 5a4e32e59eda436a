"""Collateral damage from stored per-topic counts: one SQL query against a real DuckDB code store."""

from __future__ import annotations

import math

import numpy as np

from codeunlearn.evaluation.collateral import (
    TOPIC_SPLIT,
    CollateralRow,
    join_measured,
    predict,
    spearman,
    topic_samples,
)
from codeunlearn.store.code_store import CodeStore
from codeunlearn.unlearning.masks import mask_from_codes
from codeunlearn.unlearning.selection import CodeCounts


def _counts(tokens: list[int], n_examples: int) -> CodeCounts:
    return CodeCounts(np.array(tokens), np.minimum(np.array(tokens), n_examples), sum(tokens), n_examples)


def test_predict_masked_share_and_enriched_overlap_hand_values(tmp_path):
    store = CodeStore(tmp_path / "store")
    # 4 codes. plant fires mostly code 0 and 1; animal mostly code 2 and 3.
    store.write_counts("r", TOPIC_SPLIT, "plant", _counts([6, 3, 1, 0], 5))
    store.write_counts("r", TOPIC_SPLIT, "animal", _counts([1, 1, 4, 4], 5))
    mask = mask_from_codes(4, "food", [0, 2])

    rows = {row.topic: row for row in predict(store, "r", mask, top_n=1, min_count=1)}

    assert rows["plant"].masked_share == 7 / 10 and rows["animal"].masked_share == 5 / 10
    assert rows["plant"].examples == 5
    # plant's most enriched code is 0 (6 of 10 vs 1 of 10 elsewhere): masked, so overlap 1.
    # animal's is code 3 (4 of 10 vs 0 of 10; code 2 has 4 vs 1): not masked, so overlap 0.
    assert (rows["plant"].enriched_overlap, rows["animal"].enriched_overlap) == (1, 0)
    wider = {row.topic: row for row in predict(store, "r", mask, top_n=2, min_count=1)}
    assert (wider["plant"].enriched_overlap, wider["animal"].enriched_overlap) == (1, 1)
    # A count below min_count makes a code ineligible: animal's code 3 then drops out of its top-1.
    strict = {row.topic: row for row in predict(store, "r", mask, top_n=1, min_count=5)}
    assert (strict["plant"].enriched_overlap, strict["animal"].enriched_overlap) == (1, 0)


def test_join_measured_fills_nll_change_and_normalised_drop():
    rows = [CollateralRow("plant", 5, 0.7, 1), CollateralRow("animal", 5, 0.5, 0)]
    nll = {
        "base": {"retain:plant": 5.0, "retain:animal": 4.0},
        "codebook": {"retain:plant": 4.0, "retain:animal": 3.0},
        "masked": {"retain:plant": 4.5},
    }
    join_measured(rows, nll)
    assert (rows[0].nll_delta, rows[0].drop) == (0.5, 0.5)
    assert math.isnan(rows[1].nll_delta)  # not evaluated: left unknown, not zero


def test_spearman_hand_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert abs(spearman([1, 2, 3, 4], [4, 3, 2, 1]) + 1.0) < 1e-12
    # Ties take their mean rank: x ranks 0, 1.5, 1.5, 3 against y ranks 0, 1, 2, 3.
    assert abs(spearman([1, 2, 2, 3], [1, 2, 3, 4]) - 0.9486832980505138) < 1e-12
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_topic_samples_cap_each_label_and_leave_out_the_forget_topic():
    import pyarrow as pa

    table = pa.table({"text": [f"t{i}" for i in range(9)], "label": ["a"] * 5 + ["b"] * 3 + ["food"]})
    samples = topic_samples(table, "food", per_topic=2, seed=0)
    assert sorted(samples) == ["a", "b"] and [len(v) for v in samples.values()] == [2, 2]
    assert set(samples["a"]) <= {"t0", "t1", "t2", "t3", "t4"}
    assert samples == topic_samples(table, "food", per_topic=2, seed=0)
