"""A gradient baseline as the pipeline's unlearn method (`unlearn.method`), through the CLI on the tiny
setup: its edited model is saved beside the mask, scored next to it by `evaluate`, run end to end by
`run`, and never half-written."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from codeunlearn.core.config import load_config
from codeunlearn.core.paths import RunPaths
from codeunlearn.data.corpus import content_hash
from codeunlearn.model.loading import load_model
from codeunlearn.pipeline import baseline_stage
from codeunlearn.pipeline import stages as pipeline
from codeunlearn.pipeline.evaluate import evaluate

from .conftest import Setup
from .setup_files import tiny_config, write_config

# 24 forget examples in batches of 8 for 2 epochs: 6 steps. lr far above the real 1e-5, so that so few
# steps move a random tiny model measurably.
GA = ("unlearn.method=ga", "unlearn.forget_limit=24", "unlearn.baseline.epochs=2", "unlearn.baseline.lr=1e-3")
THREADS = {"threads": 1}


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory, tiny_assets) -> Path:
    """A run directory prepared, trained, mined and masked in this process (no MLflow), to copy."""
    root = tmp_path_factory.mktemp("masked")
    model_dir, corpus = tiny_assets
    config = load_config(
        write_config(root / "config.yaml", tiny_config(root, model_dir, corpus, model=THREADS))
    )
    pipeline.prepare(config)
    pipeline.train_codebook(config)
    codebook_model = load_model(config)
    pipeline.mine(config, codebook_model)
    pipeline.unlearn(config, codebook_model.bottleneck.n_codes)
    return root / "run"


def copy_of(run_dir: Path, make_setup) -> Setup:
    """A setup of its own holding a copy of `run_dir` (same model, data and settings)."""
    setup = make_setup(model=THREADS)
    shutil.copytree(run_dir, setup.run_dir)
    return setup


def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_unlearn_with_ga_saves_an_edited_copy_that_evaluate_scores_beside_the_mask(masked_run, make_setup):
    setup = copy_of(masked_run, make_setup)
    masks = files_of(setup.run_dir / "masks")

    result = setup.cli("unlearn", *GA)

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ga: 6 steps on 24 forget and 0 retain examples in ")
    assert "the active mask is untouched" in result.stdout
    assert files_of(setup.run_dir / "masks") == masks
    assert not (setup.run_dir / baseline_stage.STAGING_DIR).exists()
    edited = setup.run_dir / "unlearned" / "ga"
    record_text = (edited / "record.json").read_text()
    record = json.loads(record_text)
    forget, _ = baseline_stage.texts_for_baseline(load_config(setup.config_path, GA))
    assert record["method"] == "ga" and record["config"]["epochs"] == 2 and record["steps"] == 6
    assert record["forget_examples"] == 24 and record["forget_hash"] == content_hash(forget)
    assert record["retain_examples"] == 0  # GA has no retain term
    assert record["flops_estimate"] > 0 and record["elapsed_s"] > 0
    assert not any(text in record_text for text in forget)  # hashes, never the text

    evaluation = setup.cli("evaluate")

    assert evaluation.returncode == 0, evaluation.stderr[-2000:]
    report = json.loads((setup.run_dir / "eval" / "report.json").read_text())
    nll = report["nll"]
    assert nll["ga"]["forget"] > nll["codebook"]["forget"]  # ascent raised the forget NLL
    assert {"base", "codebook", "masked", "random"} <= nll.keys()  # the mask is scored beside it
    assert report["mask_digest"] == json.loads(masks["active.json"])["digest"]
    scored = report["unlearned"]["ga"]
    assert scored["forget_nll"] == nll["ga"]["forget"] and scored["forget_drop"] > 0
    assert scored["retain_nll"] == nll["ga"]["retain"] and scored["steps"] == 6
    assert "| ga |" in evaluation.stdout and "unlearned/ga" in evaluation.stdout


def test_run_with_a_baseline_skips_mining_and_masking(masked_run, make_setup):
    setup = copy_of(masked_run, make_setup)
    for output in ("mining", "masks"):
        shutil.rmtree(setup.run_dir / output)

    result = setup.cli(
        "run",
        "unlearn.method=npo",
        "unlearn.forget_limit=16",
        "unlearn.baseline.epochs=1",
        "unlearn.baseline.lr=1e-3",
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert "reusing the trained codebook model" in result.stderr
    assert not (setup.run_dir / "mining").exists() and not (setup.run_dir / "masks").exists()
    report = json.loads((setup.run_dir / "eval" / "report.json").read_text())
    assert set(report["nll"]) == {"base", "codebook", "npo"}
    assert report["unlearned"]["npo"]["retain_examples"] == 64  # NPO+RT: 4x the forget examples
    assert "| npo |" in result.stdout


def test_unlearn_without_a_trained_model_names_train_and_writes_nothing(make_setup):
    setup = make_setup(model=THREADS)
    pipeline.prepare(setup.config)

    result = setup.cli("unlearn", *GA)

    assert result.returncode == 2
    assert "run `codeunlearn train` first" in result.stderr and "Traceback" not in result.stderr
    assert not (setup.run_dir / "unlearned").exists()
    assert not (setup.run_dir / baseline_stage.STAGING_DIR).exists()


def test_a_killed_unlearn_leaves_the_earlier_edited_model_whole(masked_run, make_setup):
    setup = copy_of(masked_run, make_setup)
    paths = RunPaths(setup.run_dir)
    one_epoch = load_config(setup.config_path, [*GA, "unlearn.baseline.epochs=1"])
    baseline_stage.unlearn_with_baseline(one_epoch)

    killed = setup.cli("unlearn", *GA, env={"CODEUNLEARN_FAILPOINTS": "unlearned-staged"})

    assert killed.returncode == -signal.SIGKILL
    [(record, directory)] = baseline_stage.edited_models(paths)
    assert record.steps == 3 and directory == paths.unlearned_dir / "ga"  # the earlier one, whole
    assert sorted(p.name for p in paths.unlearned_dir.iterdir()) == ["ga"]
    assert (setup.run_dir / baseline_stage.STAGING_DIR / "ga" / "record.json").is_file()  # staged outside

    baseline_stage.unlearn_with_baseline(load_config(setup.config_path, GA))  # runs again: replaces it

    [(record, _)] = baseline_stage.edited_models(paths)
    assert record.steps == 6
    assert not (setup.run_dir / baseline_stage.STAGING_DIR).exists()


def test_evaluate_without_an_edited_model_reports_as_before(masked_run, make_setup):
    setup = copy_of(masked_run, make_setup)

    report = evaluate(setup.config)

    assert set(report.nll) == {
        "base",
        "codebook",
        "masked",
        "random",
        "mined@4",
        "random@4",
        "mined@8",
        "random@8",
    }
    assert "unlearned" not in json.loads((setup.run_dir / "eval" / "report.json").read_text())


def test_tracked_pipeline_refuses_a_gradient_method_before_tracking_anything(make_setup):
    setup = make_setup(model=THREADS)

    result = setup.cli("pipeline", "unlearn.method=npo")

    assert result.returncode != 0
    assert "unlearn.method='npo'" in result.stderr and "registers mask versions only" in result.stderr
    assert not (setup.root / "state" / "mlflow.db").exists()
    assert not setup.run_dir.exists()
