"""The end-to-end Prefect flow on a tiny model against a real Prefect API (the test harness) and a real
MLflow SQLite store; assertions read MLflow, the DuckDB store and the Prefect API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from codeunlearn.model.surgery import load_codebook_model
from codeunlearn.store.code_store import CodeStore
from codeunlearn.tracking.tracker import PRODUCTION, Tracker
from codeunlearn.unlearning.masks import apply_mask, load_mask

STAGES = {"prepare", "train", "mine", "unlearn", "evaluate"}


def stage_runs(client: MlflowClient, experiment_id: str, parent_id: str) -> dict[str, object]:
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {run.data.tags["codeunlearn.stage"]: run for run in runs}


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for entry in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, entry.path) if entry.is_dir else {entry.path}
    return found


def task_states(flow_run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}

    return asyncio.run(read())


def test_pipeline_flow_tracks_registers_and_promotes(prefect_api, make_setup):
    from flows.pipeline import pipeline_flow

    setup = make_setup()
    state = pipeline_flow(str(setup.config_path), return_state=True)
    result = state.result()
    config = setup.config
    tracker = Tracker(config)
    client = MlflowClient(tracker.uri)

    # One experiment for the base model; the pipeline run and one nested run per stage, all finished.
    experiment = client.get_experiment_by_name("codeunlearn-tiny-llama")
    assert experiment.experiment_id == tracker.experiment_id
    assert Path(experiment.artifact_location) == setup.state_dir.resolve() / "mlartifacts"
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["bottleneck.n_codes"] == "64"
    runs = stage_runs(client, experiment.experiment_id, parent.info.run_id)
    assert set(runs) == STAGES and all(run.info.status == "FINISHED" for run in runs.values())
    assert all(run.data.params["topic.label"] == "noun.food" for run in runs.values())  # whole config logged

    # Metrics and artifacts of each stage.
    assert len(client.get_metric_history(runs["train"].info.run_id, "nll")) > 10  # per step
    evaluate = runs["evaluate"].data.metrics
    assert {"forget_drop", "retain_drop", "nll_masked_forget", "nll_base_retain", "gates_passed"} <= set(
        evaluate
    )
    assert {"forget_nats", "retain_nats", "gain", "learned", "random_nats", "nll_random_forget"} <= set(
        evaluate
    )
    assert evaluate["forget_drop"] == result["forget_drop"]
    assert evaluate["forget_nats"] == pytest.approx(
        evaluate["nll_masked_forget"] - evaluate["nll_codebook_forget"]
    )
    manifest_file = client.download_artifacts(runs["prepare"].info.run_id, "data_manifest.json")
    manifest = json.loads(Path(manifest_file).read_text())
    assert manifest["splits"]["forget_train"]["count"] == runs["prepare"].data.metrics["n_forget_train"] > 0
    assert len(manifest["splits"]["forget_train"]["content_hash"]) == 64
    assert artifact_paths(client, runs["mine"].info.run_id) == {
        "code_statistics.json",
        "plots/code_usage.png",
    }
    assert {"plots/sweep_frontier.png", "plots/topic_damage.png", "report/report.md"} <= artifact_paths(
        client, runs["evaluate"].info.run_id
    )
    png = Path(
        client.download_artifacts(runs["evaluate"].info.run_id, "plots/sweep_frontier.png")
    ).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert artifact_paths(client, runs["unlearn"].info.run_id) == {"mask/candidate.json"}

    # Registered versions, their tags and the production alias.
    codebook = client.get_model_version(tracker.codebook_name, result["codebook_version"])
    mask = load_mask(setup.run_dir / "masks" / "active.json")
    masked = client.get_model_version(tracker.masked_name, result["mask_version"])
    assert codebook.tags["n_codes"] == "64" and len(codebook.tags["weights_sha256"]) == 64
    assert masked.tags["parent_codebook_version"] == str(codebook.version)
    assert masked.tags["mask_digest"] == mask.digest and masked.tags["n_codes"] == str(len(mask.code_ids))
    assert masked.tags["data_hashes"] == manifest["splits"]["forget_train"]["content_hash"][:16]
    assert masked.tags["gates"] == "passed"
    assert {"forget_nats", "retain_nats", "gain", "learned", "random_share"} <= set(masked.tags)
    assert client.get_model_version_by_alias(tracker.masked_name, PRODUCTION).version == masked.version

    # The code store holds the same mask and evaluation.
    store = CodeStore(setup.run_dir / "store")
    assert store.sql("SELECT mask_version, n_codes, sources FROM masks").to_pylist() == [
        {"mask_version": str(masked.version), "n_codes": len(mask.code_ids), "sources": "noun.food"}
    ]
    drops = store.sql("SELECT split, normalized_drop FROM evaluations WHERE split IN ('forget', 'retain')")
    assert dict(zip(*drops.to_pydict().values(), strict=True))["forget"] == result["forget_drop"]

    # models:/NAME@production generates with the mask in force: the same text as the local model.
    mlflow.set_tracking_uri(tracker.uri)
    served = mlflow.pyfunc.load_model(f"models:/{tracker.masked_name}@{PRODUCTION}")
    prompt = "bread: food made from"
    generated = served.predict([prompt], params={"max_new_tokens": 8})
    local = load_codebook_model(setup.run_dir / "model")
    apply_mask(local, mask)
    ids = torch.tensor(
        [[local.tokenizer.bos_token_id, *local.tokenizer(prompt, add_special_tokens=False).input_ids]]
    )
    expected = local.model.generate(
        ids, max_new_tokens=8, do_sample=False, pad_token_id=local.tokenizer.pad_token_id
    )
    assert generated == [local.tokenizer.decode(expected[0, ids.shape[1] :], skip_special_tokens=True)]

    # A rerun takes prepare, train and mine from the cache and registers nothing new.
    again = pipeline_flow(str(setup.config_path), return_state=True)
    states = task_states(again.state_details.flow_run_id)
    assert {states[name] for name in ("prepare_data", "train_codebook", "mine_codes")} == {"Cached"}
    assert again.result()["mask_version"] == str(masked.version)
    assert (
        len(tracker._versions(tracker.codebook_name)) == 1
        and len(tracker._versions(tracker.masked_name)) == 1
    )
