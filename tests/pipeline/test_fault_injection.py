"""SIGKILL at every step of a deletion request and of a revert: a real `codeunlearn` subprocess kills
itself at a named failpoint (codeunlearn.core.failpoints), then the next run recovers. Real MLflow
SQLite registry, real Parquet store, the tiny real model.

After each recovery: the request was answered exactly once, exactly one registry version answers it,
the active mask is the union of the done requests' codes (`check_active_mask`, production included),
production holds a version that passed its gates, the killed attempt's MLflow run was ended FAILED,
and no store row is duplicated.
"""

from __future__ import annotations

import signal

import yaml
from mlflow.tracking import MlflowClient

from codeunlearn.core.config import TopicConfig
from codeunlearn.requests.invariant import check_active_mask
from codeunlearn.requests.processor import Processor
from codeunlearn.requests.queue import RequestStore
from codeunlearn.requests.service import process_open_requests
from codeunlearn.store.code_store import CodeStore
from codeunlearn.tracking.tracker import Tracker

from .conftest import Setup
from .setup_files import LABELS

# every step of answering a request, in the order they come
REQUEST_POINTS = (
    "after-claim",
    "after-mine",
    "before-register",  # the version's model is logged, the version not yet created
    "after-register",
    "before-save-mask",  # journal written, active.json not yet replaced
    "after-save-mask",  # active.json replaced, production not yet promoted
    "after-promote",  # promoted, the request not yet recorded done
)
# half the corpus's labels: the other half stays unforgotten, for the retain sets (a request's retain
# rows leave out every topic the active mask forgets)
TOPICS = LABELS[:3]
REVERT_POINTS = (
    "revert-after-claim",
    "before-register",
    "revert-after-register",
    "before-save-mask",
    "after-save-mask",
    "revert-after-promote",
)


def test_a_request_killed_at_every_step_is_answered_exactly_once(trained: Setup):
    config = trained.config
    tracker = Tracker(config)
    processor = Processor(config, tracker)
    for i, point in enumerate(REQUEST_POINTS):
        request = processor.submit(TopicConfig(label=TOPICS[i % len(TOPICS)]))

        killed = trained.cli("request", "process", env={"CODEUNLEARN_FAILPOINTS": point})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        assert RequestStore(trained.run_dir / "store").get(request.request_id).status == "processing"
        recovered = trained.cli("request", "process")
        assert recovered.returncode == 0, (point, recovered.stderr[-2000:])

        done = RequestStore(trained.run_dir / "store").get(request.request_id)
        assert done.status == "done", (point, done.error)
        assert history(trained, request.request_id) == ["pending", "processing", "processing", "done"], point
        assert versions_for(tracker, request.request_id) == [done.mask_version], point
        assert_consistent(trained, tracker, point)
        # the killed attempt's run (none yet at after-claim) was closed by the recovering run
        expected = ["FINISHED"] if point == "after-claim" else ["FAILED", "FINISHED"]
        assert run_statuses(tracker, f"unlearn {request.request_id}") == expected, point


def test_a_revert_killed_at_every_step_is_finished_exactly_once(trained: Setup):
    # two sizes to calibrate among: a replay that calibrated beside the request's own active codes
    # would choose another size and register a second version
    written = yaml.safe_load(trained.config_path.read_text())
    trained.config_path.write_text(yaml.safe_dump({**written, "calibration": {"grid": [4, 8]}}))
    config = trained.config
    tracker = Tracker(config)
    processor = Processor(config, tracker)
    ids = [processor.submit(TopicConfig(label=TOPICS[i % len(TOPICS)])).request_id for i in range(6)]
    assert [r.status for r in process_open_requests(config, tracker)] == ["done"] * len(ids)
    for request_id, point in zip(ids, REVERT_POINTS, strict=True):
        killed = trained.cli("request", "revert", request_id, env={"CODEUNLEARN_FAILPOINTS": point})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        assert RequestStore(trained.run_dir / "store").get(request_id).status == "reverting"
        assert check_active_mask(config) == [], point  # a revert under way breaks nothing
        # either the next processor run or the same command again finishes it
        command = ("request", "process") if point.startswith("revert-") else ("request", "revert", request_id)
        recovered = trained.cli(*command)
        assert recovered.returncode == 0, (point, recovered.stderr[-2000:])

        reverted = RequestStore(trained.run_dir / "store").get(request_id)
        assert reverted.status == "reverted", (point, reverted.error)
        assert history(trained, request_id).count("reverted") == 1, point
        assert versions_for(tracker, f"revert:{request_id}") == [reverted.mask_version], point
        assert tracker.production_version() == reverted.mask_version, point
        assert_consistent(trained, tracker, point)
        expected = ["FINISHED"] if point == "revert-after-claim" else ["FAILED", "FINISHED"]
        assert run_statuses(tracker, f"revert {request_id}") == expected, point
    assert RequestStore(trained.run_dir / "store").list(("done",)) == []  # every one reverted


def assert_consistent(setup: Setup, tracker: Tracker, point: str) -> None:
    assert check_active_mask(setup.config, tracker) == [], point
    production = tracker.mask_version_tags(tracker.production_version())
    assert production["gates"] == "passed", point
    store = CodeStore(setup.run_dir / "store")
    duplicates = store.sql(
        "SELECT (SELECT count(*) FROM mask_codes) - (SELECT count(*) FROM "
        "(SELECT DISTINCT mask_version, source, code_id FROM mask_codes)) AS mask_rows, "
        "(SELECT count(*) FROM evaluations) - (SELECT count(*) FROM "
        "(SELECT DISTINCT evaluation_id, split FROM evaluations)) AS evaluation_rows"
    ).to_pylist()
    assert duplicates == [{"mask_rows": 0, "evaluation_rows": 0}], point
    abandoned = MlflowClient(tracker.uri).search_runs(
        [tracker.experiment_id], "attributes.status = 'RUNNING'"
    )
    assert abandoned == [], point


def history(setup: Setup, request_id: str) -> list[str]:
    rows = CodeStore(setup.run_dir / "store").sql(
        "SELECT status FROM request_events WHERE request_id = $id ORDER BY seq", {"id": request_id}
    )
    return rows.column("status").to_pylist()


def versions_for(tracker: Tracker, request_key: str) -> list[str]:
    return sorted(
        str(v.version)
        for v in tracker._versions(tracker.masked_name)
        if v.tags.get("request_key") == request_key
    )


def run_statuses(tracker: Tracker, name: str) -> list[str]:
    runs = MlflowClient(tracker.uri).search_runs([tracker.experiment_id], f"tags.mlflow.runName = '{name}'")
    return sorted(run.info.status for run in runs)
