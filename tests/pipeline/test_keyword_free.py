"""`codeunlearn run` on the tiny setup: a label topic's keyword-free forget split is scored and shown; a
keyword topic's is empty by construction and skipped with the reason; another control mines apart."""

from __future__ import annotations

import json

import pytest

from codeunlearn.evaluation.evaluator import KEYWORD_FREE, normalized_drop

from .conftest import Setup


def _read(setup: Setup, path: str) -> dict:
    return json.loads((setup.run_dir / path).read_text())


def _sizes(calibration: dict) -> list[int]:
    return [point["n_select"] for point in calibration["frontier"]]


def test_run_scores_the_keyword_free_split_of_a_label_topic(make_setup):
    setup: Setup = make_setup(model={"threads": 1})

    result = setup.cli("run", timeout=900)

    assert result.returncode == 0, result.stderr[-3000:]
    entry = _read(setup, "data/topic/manifest.json")["keyword_free"]
    assert entry["count"] > 0 and entry["words"] and "food" in entry["words"]  # noun.food's glosses
    report = _read(setup, "eval/report.json")
    summary = report["keyword_free"]
    assert (summary["examples"], summary["of"]) == (entry["count"], entry["of"])
    assert {"masked_drop", "random_drop"} <= summary.keys() and "skipped" not in summary
    for variant in ("base", "codebook", "masked", "random", "mined@4"):
        assert KEYWORD_FREE in report["nll"][variant] and "forget" in report["nll"][variant]
    assert "| forget_keyword_free NLL |" in result.stdout
    assert f"{KEYWORD_FREE}: the {entry['count']} of {entry['of']} held-out forget examples" in result.stdout
    assert "keyword-free forget: masked drop" in result.stdout
    first_counts = _read(setup, "mining/selected.json")["counts_run"]
    # the S' the mine stage calibrated on validation, every size it tried, and the test split's figures
    selection = _read(setup, "mining/selected.json")
    calibration = report["calibration"]
    chosen = len(selection["code_ids"])
    assert calibration["chosen_n_select"] == chosen
    assert _sizes(calibration) == _sizes(selection["calibration"])
    nll = report["nll"]
    test = calibration["test"]
    for split in ("forget", "retain"):
        expected = normalized_drop(nll["base"][split], nll["codebook"][split], nll["masked"][split])
        assert test[f"{split}_drop"] == pytest.approx(expected)
    section = result.stdout.split("## S' calibrated on the validation split\n")[1]
    assert section.startswith(f"S' = {chosen} chosen (1 size scored).")
    row = next(line for line in section.splitlines() if line.startswith(f"| {chosen} (chosen)"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[-2:] == [f"{test['forget_drop']:.3f}", f"{test['retain_drop']:.3f}"]  # beside validation

    # A keyword topic's forget examples all hold its words: no keyword-free split, and a message why.
    keyword = setup.cli("run", "topic.keywords=[food, foods]", timeout=600)

    assert keyword.returncode == 0, keyword.stderr[-3000:]
    report = _read(setup, "eval/report.json")
    assert "by construction" in report["keyword_free"]["skipped"]
    assert "keyword-free forget split skipped" in keyword.stderr and "by construction" in keyword.stdout
    assert KEYWORD_FREE not in report["nll"]["masked"] and "forget_keyword_free NLL" not in keyword.stdout
    assert "words" not in _read(setup, "data/topic/manifest.json")["keyword_free"]

    # A random control is prepared, recorded and mined into counts of its own.
    random = setup.cli("run", "topic.control=random", "eval.sweep=[]", timeout=600)

    assert random.returncode == 0, random.stderr[-3000:]
    manifest = _read(setup, "data/topic/manifest.json")
    assert (manifest["control"], manifest["control_method"]) == ("random", "random_sample")
    assert _read(setup, "mining/selected.json")["counts_run"] != first_counts
