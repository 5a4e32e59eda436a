"""Masking against gradient baselines on one tiny trained codebook model (`codeunlearn compare`)."""

from __future__ import annotations

import json
import math

from codeunlearn import tracked

from .conftest import Setup


def test_compare_scores_masks_and_baselines_on_the_same_evaluation(make_setup):
    setup: Setup = make_setup()
    tracked.run_pipeline(setup.config)

    result = setup.cli(
        "compare",
        "--methods",
        "ga,npo",
        "--forget-limit",
        "24",
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--relearn",
        "3",
    )

    assert result.returncode == 0, result.stderr[-2000:]
    rows = {
        row["method"]: row for row in json.loads((setup.run_dir / "compare" / "methods.json").read_text())
    }
    assert list(rows) == ["codebook", "mask (120 mined)", "mask (24 mined)", "ga", "npo"]
    assert rows["codebook"]["forget_drop"] == 0.0 and rows["codebook"]["retain_drop"] == 0.0
    assert rows["ga"]["forget_nll"] > rows["codebook"]["forget_nll"]  # ascent raised the forget loss
    assert rows["ga"]["forget_examples"] == 24 and rows["ga"]["flops"] > 0 and rows["ga"]["wall_clock_s"] > 0
    for row in rows.values():
        assert 0.0 <= row["mia_auc_loss"] <= 1.0 and 0.0 <= row["mia_auc_min_k"] <= 1.0
        assert math.isfinite(row["forget_nll"])
    assert "| npo |" in (setup.run_dir / "compare" / "methods.md").read_text()
    # The relearning attack: the unlearned model at N=0, then 3 fine-tuning steps on the forget text.
    for method in ("codebook", "mask (120 mined)", "ga", "npo"):
        curve = rows[method]["relearning"]
        assert [point["steps"] for point in curve] == [0, 3]
        assert curve[0]["forget_nll"] == rows[method]["forget_nll"]
    ga_curve = rows["ga"]["relearning"]
    assert ga_curve[1]["forget_nll"] < ga_curve[0]["forget_nll"] and ga_curve[1]["recovery"] > 0


def test_compare_refuses_an_unknown_method(make_setup):
    setup: Setup = make_setup()
    result = setup.cli("compare", "--methods", "ga,rmu")
    assert result.returncode == 2 and "baseline.method='rmu'" in result.stderr
