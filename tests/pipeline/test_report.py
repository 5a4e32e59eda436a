"""`codeunlearn report`: the report and deletion certificate, logged to MLflow with the mask version,
whose hashes match the registered model, the registered mask, the data and the logged artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
from mlflow import MlflowClient

from codeunlearn.data.corpus import content_hash
from codeunlearn.evaluation.certificate import file_sha256
from codeunlearn.tracking import stages as tracked
from codeunlearn.tracking.tracker import Tracker
from codeunlearn.unlearning.masks import load_mask, mask_from_codes, save_mask

from .conftest import Setup


def test_certificate_hashes_match_the_registered_model_mask_data_and_report(make_setup, tmp_path):
    setup: Setup = make_setup()
    outcome = tracked.run_pipeline(setup.config)

    result = setup.cli("report")

    assert result.returncode == 0, result.stderr[-3000:]
    tracker = Tracker(setup.config)
    client = MlflowClient(tracker.uri)
    masked = client.get_model_version(tracker.masked_name, outcome["mask_version"])
    run_id = masked.tags["report_run_id"]
    assert client.get_run(run_id).data.tags["codeunlearn.mask_version"] == outcome["mask_version"]
    logged = Path(client.download_artifacts(run_id, "report", str(tmp_path)))
    certificate = json.loads((logged / "certificate.json").read_text())
    assert file_sha256(logged / "certificate.json") == masked.tags["certificate_sha256"]
    assert certificate["registry"]["mask_version"] == outcome["mask_version"]

    # The model: the registered codebook version carries the certified weights hash.
    codebook = client.get_model_version(tracker.codebook_name, certificate["registry"]["codebook_version"])
    assert certificate["model"]["weights_sha256"] == codebook.tags["weights_sha256"]
    # The mask: the mask.json inside the registered masked model is the certified mask.
    mlflow.set_tracking_uri(tracker.uri)
    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{tracker.masked_name}/{masked.version}", dst_path=str(tmp_path)
        )
    )
    registered_mask = load_mask(next(model_dir.rglob("mask.json")))
    assert registered_mask.digest == certificate["mask"]["digest"] == masked.tags["mask_digest"]
    assert certificate["mask"]["code_ids"] == list(registered_mask.code_ids)
    serving = (setup.config.bottleneck.mask_policy, setup.config.bottleneck.mask_gate)
    assert (certificate["mask"]["policy"], certificate["mask"]["gate"]) == serving == ("next_best", 1)
    assert (certificate["mask"]["context_gate"], certificate["mask"]["context_after"]) == (0, 1)
    assert (masked.tags["mask_policy"], masked.tags["mask_gate"]) == ("next_best", "1")
    # The data: every split's texts hash to the certified value.
    for split, entry in certificate["data"].items():
        texts = (
            pq.read_table(setup.run_dir / "data" / "topic" / f"{split}.parquet").column("text").to_pylist()
        )
        assert (content_hash(texts), len(texts)) == (entry["content_hash"], entry["count"])
    # The report: every logged artifact is the certified file, plots included.
    assert {"report.md", "plots/sweep_frontier.png", "inputs/evaluation.json"} <= set(
        certificate["artifacts"]
    )
    for name, digest in certificate["artifacts"].items():
        assert file_sha256(logged / name) == digest, name
    assert certificate["evaluation"]["forget_drop"] == outcome["forget_drop"]
    markdown = (logged / "report.md").read_text()
    assert "# Deletion report: noun.food" in markdown
    evaluation = json.loads((logged / "inputs" / "evaluation.json").read_text())
    chosen = evaluation["calibration"]["chosen_n_select"]  # the S' calibrated on validation, and tested
    assert (
        chosen is not None and f"## S' calibrated on the validation split\nS' = {chosen} chosen" in markdown
    )
    assert f"| {chosen} (chosen) |" in markdown and "| test forget drop |" in markdown

    # `codeunlearn verify` holds on the run, and names the mask once the active mask changes.
    verify = [
        "-m",
        "codeunlearn",
        "verify",
        str(logged / "certificate.json"),
        "--run-dir",
        str(setup.run_dir),
    ]
    held = setup.run(verify, None, 120)
    assert held.returncode == 0 and "certificate holds" in held.stdout, held.stderr[-2000:]
    mask = load_mask(setup.run_dir / "masks" / "active.json")
    extra = next(c for c in range(mask.n_codes) if c not in mask.code_ids)
    save_mask(
        mask.union(mask_from_codes(mask.n_codes, "tamper", [extra])), setup.run_dir / "masks" / "active.json"
    )
    broken = setup.run(verify, None, 120)
    assert broken.returncode == 1 and "active mask is not the certified mask" in broken.stdout


def test_report_refuses_an_evaluation_of_another_mask_and_writes_nothing(make_setup):
    setup: Setup = make_setup()
    tracked.run_pipeline(setup.config)
    mask = load_mask(setup.run_dir / "masks" / "active.json")
    save_mask(mask.without("noun.food"), setup.run_dir / "masks" / "active.json")  # not evaluated yet

    result = setup.cli("report")

    assert result.returncode == 2
    assert "codeunlearn evaluate" in result.stderr
    assert not (setup.run_dir / "report").exists()
    tracker = Tracker(setup.config)
    runs = MlflowClient(tracker.uri).search_runs([tracker.experiment_id])
    assert not [r for r in runs if r.info.run_name.startswith("report")]
