"""Calibration on a real (tiny) model reads the validation rows only: a pool that holds no test text
serves it whole, and the size it picks is the smallest that clears the gates there."""

from __future__ import annotations

from codeunlearn.core.config import BottleneckConfig, CalibrationConfig
from codeunlearn.evaluation.calibrated import HeldOut, calibrate_size, top_mask, validation_point
from codeunlearn.evaluation.text_pool import TextPool
from codeunlearn.model.surgery import insert_bottleneck
from tests.conftest import TEXTS, make_tiny


def test_calibration_scores_validation_rows_only(tokenizer):
    model = make_tiny("llama", len(tokenizer), n_layers=3)
    cm = insert_bottleneck(model, tokenizer, BottleneckConfig(layer=1, n_codes=64, top_k=2), "t")
    pool = TextPool(cm, make_tiny("llama", len(tokenizer), n_layers=3), max_length=32, batch_size=4)
    validation = HeldOut(forget=["v0", "v1", "v2"], retain=["v3", "v4", "v5"])
    pool.add(validation.ids, TEXTS[:6])  # the test rows (TEXTS[6:]) are never added
    ranked = list(range(64))
    grid = CalibrationConfig(grid=(2, 4, 8, 16, 32), search="grid")

    result = calibrate_size(pool, validation, ranked, 64, grid, min_forget_drop=-1e9, max_retain_drop=1e9)

    assert result.chosen.n_select == 2  # open gates: the cheapest size
    assert [p.n_select for p in result.frontier] == [2, 4, 8, 16, 32]
    point = validation_point(pool, validation, top_mask(ranked, 8, 64, "x"), 8)
    assert point == result.frontier[2]  # the frontier is the validation score of each size
