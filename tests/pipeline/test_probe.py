"""`codeunlearn probe` on the tiny setup: the knowledge probes (multiple choice, definitions, general
text) as a user runs them, and the report that shows them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from codeunlearn.core.config import ProbeConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.evaluation import knowledge, report
from codeunlearn.pipeline.chain import run_all

from .conftest import Setup

# Four forgotten-topic lemmas, two per other topic, short continuations; six general-text passages.
SMALL_NEW_PROBES = ("--forget-definitions", "4", "--definition-lemmas", "2", "--new-tokens", "8")
SMALL_NEW_PROBES += ("--general-passages", "6", "--general-length", "24", "--general-source")
PROSE = (
    "The river rose through the night, and by morning the low fields along its banks were under water. "
    "Farmers moved their animals to the hills and waited for the rain to stop, while the older ones "
    "told of a flood like it long ago."
)


def test_probe_scores_base_codebook_and_masked_models_and_judges_the_mask(make_setup, tmp_path):
    """All three probes through the CLI, shown by the report; then each part turned off."""
    setup: Setup = make_setup()
    run_all(setup.config)
    general = str(_prose_file(tmp_path))

    result = setup.cli(
        "probe", "--questions", "4", "--forget-questions", "10", "--seed", "3", *SMALL_NEW_PROBES, general
    )

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
    assert 0 < verdict["forget_p_value"] <= 1 and 0 < verdict["worst_retained_p_value"] <= 1
    if verdict["edited_forget"] == verdict["codebook_forget"]:  # then as many answers gained as lost
        assert verdict["forget_p_value"] == 1.0
    written = (setup.run_dir / "eval" / "probe.md").read_text()
    assert "forgotten topic: noun.food" in written and written in result.stdout
    assert "paired exact test against the codebook model" in written
    _check_definitions(probe["definitions"], set(probe["questions"]))
    _check_general_text(probe["general_text"])
    assert "### Definition generation" in written and "### General text" in written

    # The report shows every probe and certifies its figures.
    shown = report.write_report(setup.config, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert (
        "## Knowledge probes" in text and "### Definition generation" in text and "### General text" in text
    )
    assert shown.results["probe"]["definitions_chrf"] == probe["definitions"]["chrf"]
    assert shown.results["probe"]["general_text_nll"] == probe["general_text"]["nll"]

    # Each probe can be turned off; turning off all three is refused before any model loads. The
    # settings given as eval.general_text in the config, not as options, give the same sample.
    general_settings = ("passages=6", "max_length=24", "seed=3", f"source={general}")
    only_general = setup.cli(
        "probe",
        "--no-multiple-choice",
        "--no-definitions",
        *(f"eval.general_text.{setting}" for setting in general_settings),
    )
    assert only_general.returncode == 0, only_general.stderr[-3000:]
    alone = json.loads((setup.run_dir / "eval" / "probe.json").read_text())
    assert alone["accuracy"] == {} and alone["questions"] == {} and alone["definitions"] is None
    assert alone["general_text"] == probe["general_text"]  # the same sample and models: the same NLL
    assert "Multiple choice" not in only_general.stdout and "### General text" in only_general.stdout
    with pytest.raises(CodeunlearnError, match="turn on at least one"):
        knowledge.probe_run(setup.config, None)


def _check_definitions(definitions: dict, topics: set[str]) -> None:
    assert definitions["lemmas"] == {t: 4 if t == "noun.food" else 2 for t in topics}
    assert definitions["max_new_tokens"] == 8
    assert list(definitions["chrf"]) == ["base", "codebook", "masked"]
    for scores in [*definitions["chrf"].values(), definitions["floor"]]:
        assert set(scores) == topics and all(0 <= s <= 100 for s in scores.values())
    # Glosses of one topic share words: the floor is well above zero.
    assert all(s > 5 for s in definitions["floor"].values())


def _check_general_text(general: dict) -> None:
    assert general["skipped"] is None and general["passages"] == 6
    # Six passages of at least 24 tokens each, cut to 24 with BOS: 23 scored tokens each.
    assert general["tokens"] == 6 * 23
    nll = general["nll"]
    assert list(nll) == ["base", "codebook", "masked"] and all(
        math.isfinite(v) and v > 0 for v in nll.values()
    )
    assert nll["codebook"] != nll["base"]  # the trained bottleneck changes the model
    assert nll["masked"] != nll["codebook"]  # masked codes fire on general text too: the mask is in force


def _prose_file(tmp_path: Path) -> Path:
    """Eight passages of ordinary prose, blank-line separated (the Debian Reference need not be installed)."""
    path = tmp_path / "general.txt"
    path.write_text("\n\n".join(f"Passage {i}. {PROSE}" for i in range(8)))
    return path


def test_probe_without_a_trained_model_says_what_to_run(make_setup):
    setup: Setup = make_setup()
    result = setup.cli("probe", "--questions", "4")
    assert result.returncode != 0
    assert "run `codeunlearn train` first" in result.stderr and "Traceback" not in result.stderr
    assert not (setup.run_dir / "eval" / "probe.json").exists()
    # An option replaces the config's value, and is checked as the config's own would be.
    refused = setup.cli("probe", "--questions", "0")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "eval.probe.questions_per_topic=0: set it to 1 or more" in refused.stderr
