"""The command line end to end on a tiny local model, and every bad input refused cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import make_tiny

WORDNET = Path("/usr/share/wordnet/data.noun")
needs_wordnet = pytest.mark.skipif(
    not WORDNET.is_file(), reason="WordNet (Debian wordnet-base) not installed"
)

SMALL = [
    "topic.max_forget=40",
    "topic.max_control=40",
    "topic.max_retain=40",
    "topic.max_eval_forget=16",
    "topic.max_eval_retain_per_topic=1",
    "bottleneck.layer=0",
    "bottleneck.n_codes=64",
    "bottleneck.top_k=4",
    "train.max_examples=48",
    "train.batch_size=8",
    "train.init_vectors=256",
    "mining.n_select=8",
    "mining.min_count=1",
    "mining.max_p_value=1.0",
    "mining.min_enrichment=0.0",
    "eval.sweep=[4, 8]",
    "calibration.grid=[4, 8]",
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    directory = tmp_path_factory.mktemp("tiny-llama")
    make_tiny("llama", len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CODEUNLEARN_PROGRESS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "codeunlearn", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_help_lists_every_command():
    result = cli("--help")
    assert result.returncode == 0
    for command in ("prepare", "train", "mine", "unlearn", "evaluate", "run", "sql"):
        assert command in result.stdout


@needs_wordnet
def test_run_end_to_end_then_undo(tmp_path, tiny_model_dir):
    run_dir = tmp_path / "run"
    result = cli("run", f"model.name={tiny_model_dir}", f"run_dir={run_dir}", *SMALL)
    assert result.returncode == 0, result.stderr
    assert (
        "| masked |" in result.stdout and "| random |" in result.stdout and "Sweep over S'" in result.stdout
    )
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert {"base", "codebook", "masked", "random", "mined@4", "mined@8"} <= report["nll"].keys()
    assert {"forget", "retain"} <= report["nll"]["masked"].keys()
    mask = json.loads((run_dir / "masks" / "active.json").read_text())
    selection = json.loads((run_dir / "mining" / "selected.json").read_text())
    calibration = selection["calibration"]  # S' chosen on the validation split, every size tried listed
    assert {p["n_select"] for p in calibration["frontier"]} <= {4, 8}
    assert len(mask["code_ids"]) == len(selection["code_ids"]) == calibration["best_n_select"]
    shown = report["calibration"]  # and in the run's report
    assert [p["n_select"] for p in shown["frontier"]] == [p["n_select"] for p in calibration["frontier"]]
    assert "## S' calibrated on the validation split" in result.stdout
    assert f"| {calibration['best_n_select']} (" in result.stdout
    assert mask["sources"][0]["name"] == "noun.food"
    doctor = cli("doctor", "--no-registry", f"run_dir={run_dir}", f"model.name={tiny_model_dir}", *SMALL)
    assert doctor.returncode == 0 and doctor.stdout.strip() == "ok", doctor.stdout + doctor.stderr

    undone = cli(
        "unlearn", "--remove", "noun.food", f"run_dir={run_dir}", f"model.name={tiny_model_dir}", *SMALL
    )
    assert undone.returncode == 0, undone.stderr
    assert json.loads((run_dir / "masks" / "active.json").read_text())["code_ids"] == []

    counts = cli(
        "sql",
        "select split, sum(token_count) as n from code_counts group by split order by split",
        "--run-dir",
        str(run_dir),
    )
    assert counts.returncode == 0 and "forget" in counts.stdout and "retain" in counts.stdout


def refused(result: subprocess.CompletedProcess, message: str, run_dir: Path) -> None:
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    leftovers = [p for p in ("model", "masks", "store", "data", "eval") if (run_dir / p).exists()]
    assert not leftovers, f"half-written: {leftovers}"


@needs_wordnet
def test_topic_matching_nothing_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    result = cli("prepare", f"run_dir={run_dir}", "topic.label=noun.fod")
    refused(result, "did you mean noun.food", run_dir)


def test_missing_wordnet_is_refused(tmp_path):
    result = cli("prepare", f"run_dir={tmp_path / 'run'}", f"data.wordnet_dir={tmp_path / 'nowhere'}")
    refused(result, "apt-get install --no-install-recommends wordnet-base", tmp_path / "run")


def test_dataset_without_the_column_is_refused(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("id,body,topic\n1,some text,a\n2,other text,b\n")
    result = cli(
        "prepare",
        f"run_dir={tmp_path / 'run'}",
        f"data.corpus={data}",
        "data.label_column=topic",
        "topic.label=a",
    )
    refused(result, "has no column 'text'", tmp_path / "run")


def test_unknown_model_offline_is_refused(tmp_path):
    result = cli("train", f"run_dir={tmp_path / 'run'}", "model.name=nobody/no-such-model")
    refused(result, "cannot load model 'nobody/no-such-model'", tmp_path / "run")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bottleneck.top_k=5000", "top_k=5000, but bottleneck.n_codes=4096"),
        ("mining.n_select=5000", "mining.n_select=5000, but the codebook has 4096 codes"),
        ("train.lrr=1", "did you mean train.lr"),
        ("unlearn.method=dpo", "unlearn.method='dpo' is not an unlearning method (did you mean npo?)"),
    ],
)
def test_bad_config_is_refused_before_work(tmp_path, override, message):
    refused(cli("run", f"run_dir={tmp_path / 'run'}", override), message, tmp_path / "run")


@needs_wordnet
def test_layer_out_of_range_is_refused(tmp_path, tiny_model_dir):
    run_dir = tmp_path / "run"
    assert cli("prepare", f"run_dir={run_dir}", *SMALL).returncode == 0
    result = cli("train", f"run_dir={run_dir}", f"model.name={tiny_model_dir}", *SMALL, "bottleneck.layer=34")
    assert result.returncode != 0
    assert "bottleneck.layer=34, but the model has 2 decoder layers: set it between 0 and 1" in result.stderr
    assert not (run_dir / "model").exists() and not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("request", "list"),
        ("request", "show", "req-x"),
        ("request", "process"),
        ("request", "revert", "req-x"),
        ("request", "retry", "req-x"),
        ("doctor",),
    ],
)
def test_request_commands_refuse_a_missing_config_cleanly(tmp_path, args):
    result = cli(*args, "-c", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert "config file" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
