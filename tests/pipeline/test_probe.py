"""`codeunlearn probe` on the tiny setup: the knowledge probe as a user runs it."""

from __future__ import annotations

import json

from codeunlearn import pipeline
from codeunlearn.probes import ProbeConfig

from .conftest import Setup


def test_probe_scores_base_codebook_and_masked_models_and_judges_the_mask(make_setup):
    setup: Setup = make_setup()
    pipeline.run_all(setup.config)

    result = setup.cli("probe", "--questions", "4", "--forget-questions", "10", "--seed", "3")

    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads((setup.run_dir / "eval" / "probe.json").read_text())
    assert list(probe["accuracy"]) == ["base", "codebook", "masked"]
    assert probe["forget_topic"] == "noun.food" and probe["chance"] == 1 / ProbeConfig().options
    # 10 on the forgotten topic, 4 on each other held-out topic of the tiny corpus
    assert probe["questions"]["noun.food"] == 10
    assert set(probe["questions"]) == {
        "noun.food",
        "noun.animal",
        "noun.plant",
        "noun.artifact",
        "noun.person",
        "noun.location",
    }
    assert all(n == 4 for topic, n in probe["questions"].items() if topic != "noun.food")
    for accuracy in probe["accuracy"].values():
        assert set(accuracy) == set(probe["questions"])
        # accuracies are whole questions out of each topic's count
        assert all(round(a * probe["questions"][t], 6).is_integer() for t, a in accuracy.items())
    verdict = probe["verdicts"]["masked"]
    assert verdict["codebook_forget"] == probe["accuracy"]["codebook"]["noun.food"]
    assert verdict["edited_forget"] == probe["accuracy"]["masked"]["noun.food"]
    assert verdict["halfway_to_chance"] == (
        verdict["edited_forget"] <= (verdict["codebook_forget"] + verdict["chance"]) / 2
    )
    written = (setup.run_dir / "eval" / "probe.md").read_text()
    assert "forgotten topic: noun.food" in written and written in result.stdout


def test_probe_without_a_trained_model_says_what_to_run(make_setup):
    setup: Setup = make_setup()
    result = setup.cli("probe", "--questions", "4")
    assert result.returncode != 0
    assert "run `codeunlearn train` first" in result.stderr and "Traceback" not in result.stderr
    assert not (setup.run_dir / "eval" / "probe.json").exists()
