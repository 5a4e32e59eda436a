"""Exactly-once processing of deletion requests: a run killed by SIGKILL at any point leaves its request
to the next run, which finishes it without a second mask version; two runs started together process
each request once. Real processes, a real MLflow SQLite registry, the real Parquet store."""

from __future__ import annotations

import signal

import pytest

from codeunlearn.core.config import TopicConfig
from codeunlearn.requests.processor import Processor
from codeunlearn.requests.queue import RequestStore
from codeunlearn.store.code_store import CodeStore
from codeunlearn.tracking.tracker import Tracker

from .conftest import Setup


def versions_answering(tracker: Tracker, request_id: str) -> list[str]:
    return sorted(
        str(v.version)
        for v in tracker._versions(tracker.masked_name)
        if v.tags.get("request_key") == request_id
    )


def history(setup: Setup, request_id: str) -> list[str]:
    rows = CodeStore(setup.run_dir / "store").sql(
        "SELECT status FROM request_events WHERE request_id = $id ORDER BY seq", {"id": request_id}
    )
    return rows.column("status").to_pylist()


@pytest.mark.parametrize(
    ("point", "registered_before_kill"),
    [("after-claim", 0), ("after-register", 1), ("after-promote", 1)],
)
def test_request_killed_mid_processing_is_finished_once_by_the_next_run(
    trained: Setup, point: str, registered_before_kill: int
):
    config = trained.config
    tracker = Tracker(config)
    request = Processor(config, tracker).submit(TopicConfig(label="noun.animal"))

    killed = trained.cli("request", "process", env={"CODEUNLEARN_FAILPOINTS": point})

    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    requests = RequestStore(trained.run_dir / "store")
    assert requests.get(request.request_id).status == "processing"
    assert len(versions_answering(tracker, request.request_id)) == registered_before_kill

    finished = trained.cli("request", "process")

    assert finished.returncode == 0, finished.stderr[-2000:]
    done = requests.get(request.request_id)
    assert done.status == "done"
    assert versions_answering(tracker, request.request_id) == [done.mask_version]  # no duplicate
    assert tracker.production_version() == done.mask_version
    assert history(trained, request.request_id) == ["pending", "processing", "processing", "done"]
    count_files = CodeStore(trained.run_dir / "store").sql(
        "SELECT split, count(DISTINCT filename) AS files FROM code_counts WHERE run_id = $id "
        "GROUP BY split ORDER BY split",
        {"id": request.request_id},
    )
    assert count_files.to_pylist() == [{"split": "control", "files": 1}, {"split": "forget", "files": 1}]


def test_killed_flow_run_is_finished_by_the_next_flow_run(trained: Setup, prefect_api: str):
    config = trained.config
    tracker = Tracker(config)
    request = Processor(config, tracker).submit(TopicConfig(label="noun.plant"))
    env = {"PREFECT_API_URL": prefect_api}

    killed = trained.flow("deletion_requests", env={**env, "CODEUNLEARN_FAILPOINTS": "after-register"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (registered,) = versions_answering(tracker, request.request_id)

    finished = trained.flow("deletion_requests", env=env)

    assert finished.returncode == 0, finished.stderr[-3000:]
    done = RequestStore(trained.run_dir / "store").get(request.request_id)
    assert (done.status, done.mask_version) == ("done", registered)
    assert versions_answering(tracker, request.request_id) == [registered]


def test_two_runs_started_together_process_each_request_once(trained: Setup, prefect_api: str):
    config = trained.config
    tracker = Tracker(config)
    processor = Processor(config, tracker)
    ids = [processor.submit(TopicConfig(label=label)).request_id for label in ("noun.animal", "noun.plant")]
    env = {"PREFECT_API_URL": prefect_api}
    flow_args = ["-m", "flows.deletion_requests", str(trained.config_path)]

    runs = [
        trained.popen(flow_args, env),
        trained.popen(["-m", "codeunlearn", "request", "process", "-c", str(trained.config_path)], env),
    ]
    outputs = [run.communicate(timeout=600) for run in runs]

    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    requests = RequestStore(trained.run_dir / "store")
    for request_id in ids:
        assert history(trained, request_id) == ["pending", "processing", "done"]
        assert versions_answering(tracker, request_id) == [requests.get(request_id).mask_version]
    assert len(tracker._versions(tracker.masked_name)) == 2
    # The lock serialises them: whichever run got it first took both requests, the other found none.
    taken_by_cli = [request_id for request_id in ids if request_id in outputs[1][0]]
    assert taken_by_cli in ([], ids), outputs[1][0]
