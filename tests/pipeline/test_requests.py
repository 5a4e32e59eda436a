"""Deletion requests against a real MLflow registry (SQLite) and the real DuckDB/Parquet store: revert,
bad input refused with nothing half-written, gates that hold production back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from codeunlearn.core.config import CalibrationConfig, TopicConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.data.topics import read_splits
from codeunlearn.requests.invariant import check_active_mask
from codeunlearn.requests.processor import Processor
from codeunlearn.requests.queue import RequestStore
from codeunlearn.requests.service import process_open_requests, revert_request
from codeunlearn.store.code_store import CodeStore
from codeunlearn.tracking import stages as tracked
from codeunlearn.tracking.tracker import PRODUCTION, Tracker
from codeunlearn.unlearning.masks import load_mask, save_mask

from .conftest import Setup


def masked_versions(tracker: Tracker) -> dict[str, dict[str, str]]:
    return {str(v.version): dict(v.tags) for v in tracker._versions(tracker.masked_name)}


def production(tracker: Tracker) -> str:
    return str(MlflowClient(tracker.uri).get_model_version_by_alias(tracker.masked_name, PRODUCTION).version)


def test_add_two_requests_then_revert_the_first_leaves_the_second_alone(trained: Setup):
    config = with_grid(trained.config, (4, 8))
    tracker = Tracker(config)
    processor = Processor(config, tracker)
    first = processor.submit(TopicConfig(label="noun.animal"))
    second = processor.submit(TopicConfig(label="noun.plant"))
    assert [r.status for r in process_open_requests(config, tracker)] == ["done", "done"]

    requests = RequestStore(trained.run_dir / "store")
    a, b = requests.get(first.request_id), requests.get(second.request_id)
    versions = masked_versions(tracker)
    assert versions[a.mask_version]["request_ids"] == a.request_id
    assert versions[b.mask_version]["request_ids"] == f"{a.request_id},{b.request_id}"
    assert versions[b.mask_version]["parent_codebook_version"] == "1"
    # the record, and the request's run, say which S' was chosen among which, and what the test split gave
    assert a.chosen_n_select == 4 and [p.n_select for p in a.frontier] == [4, 8]
    run = request_run(tracker, a.request_id)
    assert run.data.params["chosen_n_select"] == "4" and run.data.params["calibration_sizes_scored"] == "2"
    metrics = run.data.metrics
    assert (metrics["chosen_n_select"], metrics["calibration_sizes_scored"]) == (4.0, 2.0)
    assert metrics["val_forget_drop"] == pytest.approx(a.frontier[0].forget_drop)
    assert (a.test_forget_drop, a.test_retain_drop) == (
        pytest.approx(metrics["forget_drop"]),
        pytest.approx(metrics["retain_drop"]),
    )
    b_codes = set(load_mask(trained.run_dir / "masks" / "active.json").sources[1].code_ids)

    reverted = revert_request(config, tracker, a.request_id)

    active = load_mask(trained.run_dir / "masks" / "active.json")
    assert set(active.code_ids) == b_codes and [s.name for s in active.sources] == [b.request_id]
    assert reverted.status == "reverted" and production(tracker) == reverted.mask_version
    assert len(masked_versions(tracker)) == 3  # A, A+B, B: each step a registered version
    assert masked_versions(tracker)[reverted.mask_version]["mask_digest"] == active.digest
    rows = CodeStore(trained.run_dir / "store").sql(
        "SELECT sources, n_codes FROM masks WHERE mask_version = $v", {"v": reverted.mask_version}
    )
    assert rows.to_pylist() == [{"sources": b.request_id, "n_codes": len(b_codes)}]
    with pytest.raises(CodeunlearnError, match="only done requests can be reverted"):
        revert_request(config, tracker, a.request_id)
    assert check_active_mask(config, tracker) == []

    shown = trained.cli("request", "show", a.request_id)  # reverted: how it was answered stays told
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "status         reverted" in shown.stdout and "Point(" not in shown.stdout
    assert "calibration    S' = 4 chosen on the validation split (2 sizes scored)" in shown.stdout
    rows = table_rows(shown.stdout)
    assert [row[0] for row in rows] == ["4 (chosen)", "8"]
    assert rows[0][1:] == [f"{a.frontier[0].forget_drop:.3f}", f"{a.frontier[0].retain_drop:.3f}"] + [
        f"{a.test_forget_drop:.3f}",
        f"{a.test_retain_drop:.3f}",
    ]
    assert f"test           at S' = 4: forget drop {a.test_forget_drop:.3f} (validation" in shown.stdout


def with_grid(config, grid: tuple[int, ...]):
    return replace(config, calibration=replace(config.calibration, grid=grid))


def request_run(tracker: Tracker, request_id: str):
    client = MlflowClient(tracker.uri)
    (run,) = client.search_runs([tracker.experiment_id], f"params.request_id = '{request_id}'")
    return run


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the frontier table `request show` prints."""
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| S'")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_a_later_request_judges_retain_without_the_rows_an_earlier_one_forgot(trained: Setup):
    config = trained.config
    tracker = Tracker(config)
    processor = Processor(config, tracker)
    first = processor.submit(TopicConfig(label="noun.animal"))
    second = processor.submit(TopicConfig(label="noun.plant"))
    assert [r.status for r in process_open_requests(config, tracker)] == ["done", "done"]

    before, after = (
        read_splits(trained.run_dir / "requests" / r.request_id / "topic") for r in (first, second)
    )
    # the first was answered beside an empty mask: its retain sets hold every other label
    assert "noun.plant" in before.retain_test.column("label").to_pylist()
    assert "excluded_topics" not in before.manifest
    for name in ("retain_val", "retain_test"):
        labels = set(getattr(after, name).column("label").to_pylist())
        assert "noun.animal" not in labels and "noun.food" in labels, name
    (excluded,) = after.manifest["excluded_topics"]
    assert (excluded["kind"], excluded["key"]) == ("label", "noun.animal")
    assert excluded["removed"]["retain_test"] > 0 and excluded["removed"]["retain_val"] > 0
    # its own forget set is the label's rows as ever
    assert set(after.forget_test.column("label").to_pylist()) == {"noun.plant"}


def test_topic_that_matches_nothing_is_refused_and_nothing_recorded(trained: Setup):
    result = trained.cli("request", "add", "--keywords", "zzqxv,qqxzv")
    assert result.returncode == 2
    assert "matches no example" in result.stderr and "choose words that occur" in result.stderr
    assert RequestStore(trained.run_dir / "store").list() == []


def test_request_against_a_missing_model_version_is_refused(trained: Setup):
    result = trained.cli("request", "add", "--label", "noun.animal", "--model-version", "9")
    assert result.returncode == 2
    assert "has no version '9' (versions: 1)" in result.stderr
    assert RequestStore(trained.run_dir / "store").list() == []


def test_corrupted_parquet_file_in_the_store_is_named_and_nothing_processed(trained: Setup):
    config = trained.config
    tracker = Tracker(config)
    request = Processor(config, tracker).submit(TopicConfig(label="noun.animal"))
    event_file = next((trained.run_dir / "store" / "requests").glob("*.parquet"))
    event_file.write_bytes(event_file.read_bytes()[:40])

    result = trained.cli("request", "process")

    assert result.returncode == 2
    assert "unreadable Parquet" in result.stderr and str(event_file) in result.stderr
    assert masked_versions(tracker) == {}
    assert len(list((trained.run_dir / "store" / "requests").glob("*.parquet"))) == 1  # no new event
    assert request.request_id in event_file.name


def test_failing_gate_registers_the_version_but_keeps_production(make_setup):
    setup = make_setup(gates={"min_forget_drop": -1e9, "max_retain_drop": 1e9})
    config = setup.config
    outcome = tracked.run_pipeline(config)  # open gates: version 1 becomes production
    assert outcome["promoted"] and production(Tracker(config)) == outcome["mask_version"]

    # uncalibrated (the paper's fixed S'): the test split's gate is what fails, after registration
    strict = replace(make_gates(setup, min_forget_drop=1e9), calibration=CalibrationConfig(grid=()))
    tracker = Tracker(strict)
    request = Processor(strict, tracker).submit(TopicConfig(label="noun.animal"))
    (processed,) = process_open_requests(strict, tracker)

    assert processed.status == "rejected"
    assert (
        "gates failed: forget drop" in processed.error
        and "< gates.min_forget_drop 1000000000.0" in processed.error
    )
    registered = masked_versions(tracker)[processed.mask_version]
    assert registered["gates"].startswith("forget drop")  # registered ...
    assert {"forget_nats", "retain_nats", "gain", "learned", "random_share"} <= set(registered)
    client = MlflowClient(tracker.uri)
    run_id = client.get_model_version(tracker.masked_name, processed.mask_version).run_id
    metrics = client.get_run(run_id).data.metrics  # the request's run: raw nats, gain, random control
    assert {"forget_nats", "gain", "learned", "random_nats", "forget_nll_random"} <= set(metrics)
    assert metrics["forget_nats"] == pytest.approx(
        metrics["forget_nll_masked"] - metrics["forget_nll_codebook"]
    )
    assert metrics["gates_passed"] == 0.0
    assert production(tracker) == outcome["mask_version"]  # ... but production did not move
    assert [s.name for s in load_mask(setup.run_dir / "masks" / "active.json").sources] == ["noun.food"]
    stored = RequestStore(setup.run_dir / "store").get(request.request_id)
    assert stored.status == "rejected" and stored.error == processed.error
    # no calibration ran: no S' chosen or scored, but the test result it failed on is recorded
    assert (stored.chosen_n_select, stored.frontier) == (None, ())
    assert stored.test_forget_drop == pytest.approx(metrics["forget_drop"]) and stored.test_forget_drop < 1e9
    assert "calibration_sizes_scored" not in metrics and "chosen_n_select" not in metrics
    shown = setup.cli("request", "show", request.request_id)
    assert "calibration    off (calibration.grid is empty)" in shown.stdout
    assert f"test           forget drop {stored.test_forget_drop:.3f}, retain drop" in shown.stdout
    gates = CodeStore(setup.run_dir / "store").sql(
        "SELECT DISTINCT gates_passed FROM evaluations WHERE mask_version = $v", {"v": processed.mask_version}
    )
    assert gates.column("gates_passed").to_pylist() == [False]
    assert check_active_mask(strict, tracker) == []


def test_a_pipeline_topic_that_fails_its_gates_never_becomes_active(trained: Setup):
    config = trained.config
    tracker = Tracker(config)
    first = Processor(config, tracker).submit(TopicConfig(label="noun.animal"))
    (answered,) = process_open_requests(config, tracker)
    active_file = trained.run_dir / "masks" / "active.json"
    before = active_file.read_bytes()

    outcome = tracked.run_pipeline(make_gates(trained, min_forget_drop=0.99))  # topic noun.food

    assert not outcome["promoted"] and outcome["gate_failures"]
    assert masked_versions(tracker)[outcome["mask_version"]]["sources"] == "noun.food"  # registered ...
    assert active_file.read_bytes() == before  # ... but neither active ...
    assert production(tracker) == answered.mask_version  # ... nor production
    second = Processor(config, tracker).submit(TopicConfig(label="noun.plant"))
    (next_one,) = process_open_requests(config, tracker)
    assert next_one.status == "done"
    tags = masked_versions(tracker)[next_one.mask_version]
    assert tags["request_ids"] == f"{first.request_id},{second.request_id}" and tags["sources"] == ""
    assert check_active_mask(config, tracker) == []
    assert trained.cli("doctor").stdout.strip() == "ok"

    leaked = load_mask(active_file).union(load_mask(trained.run_dir / "masks" / "candidate.json"))
    save_mask(leaked, active_file)  # what the union of a failed candidate used to do
    result = trained.cli("doctor")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "topic noun.food is in the active mask, but the pipeline never activated it" in result.stdout
    assert "production holds mask" in result.stdout


def make_gates(setup: Setup, **gates: float):
    from dataclasses import replace

    config = setup.config
    return replace(config, gates=replace(config.gates, **gates))


def test_examples_file_edited_after_submission_fails_the_request(trained: Setup, tmp_path: Path):
    examples = tmp_path / "forget.jsonl"
    examples.write_text('{"text": "the first secret line"}\n{"text": "the second secret line"}\n')
    config = trained.config
    tracker = Tracker(config)
    request = Processor(config, tracker).submit(TopicConfig(label=None, examples_file=str(examples)))
    examples.write_text('{"text": "something else entirely"}\n{"text": "and more"}\n')

    (processed,) = process_open_requests(config, tracker)

    assert processed.request_id == request.request_id and processed.status == "failed"
    assert "changed since it was submitted" in processed.error
    assert masked_versions(tracker) == {}


def test_a_request_no_calibrated_size_can_pass_is_rejected_with_nothing_written(trained: Setup):
    config = replace(
        with_grid(trained.config, (4, 8)),
        gates=replace(trained.config.gates, min_forget_drop=1.0, max_retain_drop=0.0),
    )
    tracker = Tracker(config)
    processor = Processor(config, tracker)
    request = processor.submit(TopicConfig(label="noun.animal"))
    before = masked_versions(tracker)

    (answered,) = process_open_requests(config, tracker)

    assert answered.status == "rejected" and answered.error.startswith(
        "calibration: best validation point S' = "
    )
    assert "eligible codes" in answered.error and answered.mask_version in ("", None)
    assert masked_versions(tracker) == before  # no version registered
    assert not (trained.run_dir / "masks" / "active.json").exists()
    store = CodeStore(trained.run_dir / "store")
    assert store.sql("SELECT count(*) AS n FROM mask_codes").column("n")[0].as_py() == 0
    assert store.sql("SELECT count(*) AS n FROM evaluations").column("n")[0].as_py() == 0
    client = MlflowClient(tracker.uri)
    runs = client.search_runs([tracker.experiment_id], f"params.request_id = '{request.request_id}'")
    assert runs and runs[0].info.status == "FINISHED"
    artifacts = [a.path for a in client.list_artifacts(runs[0].info.run_id)]
    assert "calibration.json" in artifacts
    # the record keeps every size tried and no chosen size or test result, which never happened
    sizes = [p.n_select for p in answered.frontier]
    assert sizes and set(sizes) <= {4, 8} and answered.chosen_n_select is None
    assert (answered.test_forget_drop, answered.test_retain_drop) == (None, None)
    stored = RequestStore(trained.run_dir / "store").get(request.request_id)
    assert [p.n_select for p in stored.frontier] == sizes and stored.chosen_n_select is None
    assert stored.test_forget_drop is None and stored.mask_version == ""
    params, metrics = runs[0].data.params, runs[0].data.metrics
    assert params["chosen_n_select"] == "none" and params["calibration_sizes_scored"] == str(len(sizes))
    assert metrics["calibration_sizes_scored"] == len(sizes) and "chosen_n_select" not in metrics
    shown = trained.cli("request", "show", request.request_id)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert (
        "status         rejected" in shown.stdout
        and "error          calibration: best validation" in shown.stdout
    )
    assert f"no S' clears both gates on the validation split ({len(sizes)} size" in shown.stdout
    rows = table_rows(shown.stdout)
    assert [int(row[0]) for row in rows] == sizes
    assert rows[0][1] == f"{answered.frontier[0].forget_drop:.3f}" and "test forget" not in shown.stdout
