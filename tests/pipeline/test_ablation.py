"""`codeunlearn ablate` on the tiny setup: one variant per changed setting, a table, JSON and a plot."""

from __future__ import annotations

import json

import pytest

from codeunlearn.core.config import load_config
from codeunlearn.core.errors import ConfigError
from codeunlearn.pipeline.ablation import AblationSpec, load_spec

from .conftest import REPO, Setup


def test_ablate_runs_one_variant_per_setting_and_reuses_the_trained_model(make_setup):
    setup: Setup = make_setup()
    spec = setup.root / "ablation.yaml"
    spec.write_text(
        "overrides: [train.max_examples=240, eval.run_reference=true]\n"
        "axes:\n  mining.n_select: [4, 8]\n  bottleneck.top_k: [2, 4]\n  mining.min_count: [1, 3, 100000]\n"
        "  train.mode: [frozen]\n  topic.control: [random]\n"
    )
    out = setup.root / "ablation"

    result = setup.cli("ablate", "--spec", str(spec), "--out", str(out), timeout=600)

    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "ablation.json").read_text())
    assert [(r["axis"], r["value"]) for r in rows] == [
        ("baseline", "-"),
        ("mining.n_select", "4"),
        ("mining.n_select", "8"),
        ("bottleneck.top_k", "2"),  # top_k=4 is the baseline itself: not run twice
        ("mining.min_count", "3"),
        ("mining.min_count", "100000"),  # no code passes: a row that says why, not a crash
        ("train.mode", "frozen"),
        ("topic.control", "random"),  # mines its own control set on the baseline's codebook
    ]
    assert (out / "ablation.png").stat().st_size > 0 and "| bottleneck.top_k | 2 |" in result.stdout
    assert rows[2]["n_masked"] == 8 and rows[1]["n_masked"] == 4
    # Every variant trained on the shared budget; the min_count variant reused the baseline's model.
    baseline = json.loads((out / "baseline" / "model" / "training_config.json").read_text())
    assert baseline["train"]["max_examples"] == 240
    assert (out / "mining.min_count=3" / "model").is_symlink()
    assert (out / "topic.control=random" / "model").is_symlink()
    control = json.loads((out / "topic.control=random" / "data" / "topic" / "manifest.json").read_text())
    assert control["control_method"] == "random_sample"
    # The tiny noun.food topic has keyword-free held-out examples: every row that ran has their drop.
    assert all(isinstance(r["keyword_free_drop"], float) for r in rows if not r["error"])
    assert "keyword-free forget drop" in result.stdout
    assert not (out / "bottleneck.top_k=2" / "model").is_symlink()
    codebook = json.loads((out / "bottleneck.top_k=2" / "model" / "codebook_config.json").read_text())
    assert codebook["bottleneck"]["top_k"] == 2
    # The no-bottleneck reference depends on none of the bottleneck's settings (a frozen codebook's
    # reference trains in mode `above`): fine-tuned once for them, shared through one cache file, a ratio
    # on every row. The control variant evaluates on other texts (its control rows leave the retain
    # split, and its keyword-free words are ranked against that retain set): a reference of its own.
    assert len(json.loads((out / "reference_nll.json").read_text())["entries"]) == 2
    assert all(r["reference_ratio"] > 0.5 for r in rows if not r["error"])
    failed = rows[5]
    assert failed["error"].startswith("no code passes the mining thresholds")
    assert failed["forget_drop"] is None and failed["n_masked"] == 0
    assert "| mining.min_count | 100000 | failed: no code passes" in result.stdout
    assert not (out / "mining.min_count=100000" / "masks" / "active.json").exists()
    assert "codebook / reference NLL" in (out / "ablation.md").read_text()


def test_ablate_refuses_a_spec_with_an_unknown_setting(make_setup):
    setup: Setup = make_setup()
    spec = setup.root / "ablation.yaml"
    spec.write_text("axes:\n  bottleneck.topk: [2]\n")

    result = setup.cli("ablate", "--spec", str(spec), "--out", str(setup.root / "ablation"))

    assert result.returncode == 2
    assert "bottleneck.topk" in result.stderr and "top_k" in result.stderr
    assert not (setup.root / "ablation").exists()


def test_the_control_ablation_spec_parses_and_keeps_to_constructions_a_label_topic_allows():
    base = load_config(REPO / "configs" / "default.yaml")
    spec = load_spec(REPO / "configs" / "ablation-control.yaml")

    spec.validate(base)  # every variant is a valid config, checked before any model loads

    assert spec.axes == {"topic.control": ("random",)}
    assert {"train.max_examples=1500", "topic.max_retain=300"} <= set(spec.overrides)
    with pytest.raises(ConfigError, match="topic.control=swap .* has no words to swap"):
        AblationSpec(axes={"topic.control": ("swap",)}).validate(base)  # noun.food is a label topic
