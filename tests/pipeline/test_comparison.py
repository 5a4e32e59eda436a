"""Masking against gradient baselines on one tiny trained codebook model (`codeunlearn compare`)."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq

from codeunlearn.tracking import stages as tracked

from .conftest import Setup


def test_compare_scores_masks_and_baselines_on_the_same_evaluation(make_setup):
    setup: Setup = make_setup()
    tracked.run_pipeline(setup.config)

    result = setup.cli(
        "compare",
        "--methods",
        "ga,npo,rmu",
        "--forget-limit",
        "24",
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--relearn",
        "3",
        "--probe-questions",
        "3",
        "--quantize",
        "16,2",
    )

    assert result.returncode == 0, result.stderr[-2000:]
    rows = {
        row["method"]: row for row in json.loads((setup.run_dir / "compare" / "methods.json").read_text())
    }
    # the mask mines every forget training example (what the validation split leaves of the cap)
    mined = (
        f"mask ({pq.read_metadata(setup.run_dir / 'data' / 'topic' / 'forget_train.parquet').num_rows} mined)"
    )
    assert list(rows) == ["codebook", mined, "mask (24 mined)", "ga", "npo", "rmu"]
    assert rows["codebook"]["forget_drop"] == 0.0 and rows["codebook"]["retain_drop"] == 0.0
    assert rows["ga"]["forget_nll"] > rows["codebook"]["forget_nll"]  # ascent raised the forget loss
    for method in ("ga", "rmu"):
        assert rows[method]["forget_examples"] == 24 and rows[method]["flops"] > 0
        assert rows[method]["wall_clock_s"] > 0
    assert rows["rmu"]["flops"] < rows["ga"]["flops"]  # it stops at a low layer and trains three MLPs
    for row in rows.values():
        assert 0.0 <= row["mia_auc_loss"] <= 1.0 and 0.0 <= row["mia_auc_min_k"] <= 1.0
        assert math.isfinite(row["forget_nll"])
    assert "| npo |" in (setup.run_dir / "compare" / "methods.md").read_text()
    # Rounding weights to 16 bits changes nothing measurable; to 2 bits it changes every method's NLL.
    for row in rows.values():
        assert [q["bits"] for q in row["quantized"]] == [16, 2]
        assert abs(row["quantized"][0]["forget_nll"] - row["forget_nll"]) < 1e-3
        assert abs(row["quantized"][1]["forget_nll"] - row["forget_nll"]) > 1e-3
    assert "int2 weights" in (setup.run_dir / "compare" / "methods.md").read_text()
    # The knowledge probe scored the base model and every method on the same questions.
    probe = json.loads((setup.run_dir / "compare" / "probe.json").read_text())
    assert list(probe["accuracy"]) == ["base", *rows]
    assert probe["questions"]["noun.food"] == 12 and probe["questions"]["noun.animal"] == 3
    assert set(probe["verdicts"]) == set(rows) - {"codebook"}
    for accuracy in probe["accuracy"].values():
        assert set(accuracy) == set(probe["questions"]) and all(0 <= a <= 1 for a in accuracy.values())
    # The relearning attack: the unlearned model at N=0, then 3 fine-tuning steps on the forget text.
    for method in ("codebook", mined, "ga", "npo"):
        curve = rows[method]["relearning"]
        assert [point["steps"] for point in curve] == [0, 3]
        assert curve[0]["forget_nll"] == rows[method]["forget_nll"]
    ga_curve = rows["ga"]["relearning"]
    assert ga_curve[1]["forget_nll"] < ga_curve[0]["forget_nll"] and ga_curve[1]["recovery"] > 0

    # The report gathers the comparison, its attacks and the probe, and the certificate records them.
    report = setup.cli("report", "--no-mlflow")
    assert report.returncode == 0, report.stderr[-2000:]
    text = (setup.run_dir / "report" / "report.md").read_text()
    for heading in (
        "Masking against gradient baselines",
        "Relearning attack",
        "Quantization attack",
        "Knowledge probe on every method",
        "On the forget/retain frontier",
    ):
        assert heading in text, heading
    certificate = json.loads((setup.run_dir / "report" / "certificate.json").read_text())
    assert set(certificate["results"]["methods"]) == set(rows)
    assert certificate["results"]["methods"]["npo"]["relearning"] == rows["npo"]["relearning"]
    assert {"plots/methods_frontier.png", "plots/relearning.png"} <= set(certificate["artifacts"])


def test_compare_refuses_an_unknown_method(make_setup):
    setup: Setup = make_setup()
    result = setup.cli("compare", "--methods", "ga,dpo")
    assert result.returncode == 2
    assert "baseline.method='dpo': use one of ga, graddiff, npo, rmu" in result.stderr
