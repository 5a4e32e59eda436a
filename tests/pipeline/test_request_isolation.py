"""Each deletion request is processed in isolation: a poison request (one that fails on the disk, or whose
topic matches nothing) ends its own attempt, its MLflow run FAILED, and the queue goes on. Real MLflow
SQLite registry, real Parquet store, the tiny real model."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from mlflow.tracking import MlflowClient

from codeunlearn.core.config import TopicConfig
from codeunlearn.requests.invariant import check_active_mask
from codeunlearn.requests.processor import Processor
from codeunlearn.requests.queue import RequestStore
from codeunlearn.requests.service import process_open_requests
from codeunlearn.tracking.tracker import Tracker
from codeunlearn.unlearning.masks import load_mask

from .conftest import Setup


def run_statuses(tracker: Tracker, request_id: str) -> list[str]:
    runs = MlflowClient(tracker.uri).search_runs(
        [tracker.experiment_id], f"tags.mlflow.runName = 'unlearn {request_id}'"
    )
    return sorted(run.info.status for run in runs)


def test_poison_requests_end_their_own_attempts_and_the_others_are_answered(trained: Setup):
    config = trained.config
    tracker = Tracker(config)
    processor = Processor(config, tracker)
    requests = RequestStore(trained.run_dir / "store")
    animal = processor.submit(TopicConfig(label="noun.animal"))
    blocked = processor.submit(TopicConfig(label="noun.plant"))
    # Where this request's splits go is a file: writing them fails with an OSError (transient).
    obstacle = trained.run_dir / "requests" / blocked.request_id
    obstacle.parent.mkdir(parents=True, exist_ok=True)
    obstacle.write_text("in the way")
    # Recorded past `submit`'s check: its topic matches nothing (permanent).
    nothing = requests.add(TopicConfig(label=None, keywords=("zzqxv",)), tracker.codebook_name, "1")
    person = processor.submit(TopicConfig(label="noun.person"))

    first = {r.request_id: r for r in process_open_requests(config, tracker)}

    assert first[animal.request_id].status == first[person.request_id].status == "done"
    assert (first[blocked.request_id].status, first[blocked.request_id].attempts) == ("pending", 1)
    assert first[blocked.request_id].error.split(":")[:2] == ["attempt 1", " FileExistsError"]
    assert (
        first[nothing.request_id].status == "failed"
        and "matches no example" in first[nothing.request_id].error
    )
    assert run_statuses(tracker, blocked.request_id) == ["FAILED"]
    assert run_statuses(tracker, nothing.request_id) == ["FAILED"]
    assert check_active_mask(config, tracker) == []

    # Backoff: the next run within requests.retry_backoff_s (60 s) leaves it waiting.
    waiting = first[blocked.request_id]
    assert (waiting.not_before - waiting.updated_at).total_seconds() == pytest.approx(60, abs=1)
    assert waiting.not_before > datetime.now(UTC)
    assert process_open_requests(config, tracker) == []
    assert requests.get(blocked.request_id).attempts == 1

    # 60 s later its wait is over; from then on, runs that wait no more before a retry
    requests.mark(requests.get(blocked.request_id), "pending", not_before=datetime.now(UTC))
    impatient = replace(config, requests=replace(config.requests, retry_backoff_s=0.0))
    limit = config.requests.max_attempts
    for attempt in range(2, limit + 1):  # each run tries it once more, the others are not touched
        (again,) = process_open_requests(impatient, tracker)
        assert again.request_id == blocked.request_id and again.attempts == attempt
    assert again.status == "failed" and again.error.startswith(f"gave up after {limit} attempts")
    assert process_open_requests(impatient, tracker) == []

    retried = trained.cli("request", "retry", blocked.request_id)
    assert retried.returncode == 0, retried.stderr[-2000:]
    assert (requests.get(blocked.request_id).status, requests.get(blocked.request_id).attempts) == (
        "pending",
        0,
    )
    obstacle.unlink()
    (answered,) = process_open_requests(config, tracker)

    assert answered.status == "done" and answered.attempts == 1
    sources = [s.name for s in load_mask(trained.run_dir / "masks" / "active.json").sources]
    assert sources == [animal.request_id, person.request_id, blocked.request_id]
    assert tracker.production_version() == answered.mask_version
    assert check_active_mask(config, tracker) == []
    refused = trained.cli("request", "retry", nothing.request_id + "x")
    assert refused.returncode == 2 and "no deletion request" in refused.stderr


def test_a_request_left_processing_by_killed_runs_fails_after_the_last_attempt(trained: Setup):
    config = trained.config
    tracker = Tracker(config)
    request = Processor(config, tracker).submit(TopicConfig(label="noun.animal"))
    requests = RequestStore(trained.run_dir / "store")
    limit = config.requests.max_attempts
    # What `limit` runs killed mid-processing leave behind (a SIGKILL leaves no error).
    requests.mark(requests.get(request.request_id), "processing", attempts=limit)

    (processed,) = process_open_requests(config, tracker)

    assert processed.status == "failed" and processed.error.startswith(f"gave up after {limit} attempts")
    assert tracker.production_version() is None and not (trained.run_dir / "masks" / "active.json").exists()
