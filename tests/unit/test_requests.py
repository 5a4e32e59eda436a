"""The deletion-request store: an append-only event log in Parquet whose `requests` view gives each
request's current state, and the processing lock that a dead holder gives up."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from codeunlearn.core.config import TopicConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.requests.answer import ANSWER_FIELDS, describe
from codeunlearn.requests.queue import RequestStore, topic_hash
from codeunlearn.store.code_store import CodeStore
from codeunlearn.tracking.tracker import public_params
from codeunlearn.unlearning.calibration import Point


@pytest.fixture
def store(tmp_path: Path) -> RequestStore:
    return RequestStore(tmp_path / "store")


def test_add_mark_and_read_back_the_latest_state(store: RequestStore):
    first = store.add(TopicConfig(label="noun.food"), "m-codebook", "3")
    second = store.add(TopicConfig(label=None, keywords=("julien", "captain")), "m-codebook", "3")
    store.mark(first, "processing")
    store.mark(store.get(first.request_id), "done", mask_version="7", mask_digest="abc")

    done = store.get(first.request_id)
    assert (done.status, done.mask_version, done.mask_digest, done.model_version) == ("done", "7", "abc", "3")
    assert [r.request_id for r in store.list()] == [first.request_id, second.request_id]
    assert [r.request_id for r in store.open_requests()] == [second.request_id]
    assert second.topic(TopicConfig()).keywords == ("julien", "captain")
    assert second.topic(TopicConfig()).label is None
    events = CodeStore(store.store.root).sql(
        "SELECT status FROM request_events WHERE request_id = $id ORDER BY seq", {"id": first.request_id}
    )
    assert events.column("status").to_pylist() == ["pending", "processing", "done"]


def test_unknown_request_and_bad_status_are_refused(store: RequestStore):
    request = store.add(TopicConfig(label="noun.food"), "m", "1")
    with pytest.raises(CodeunlearnError, match="no deletion request 'req-missing'.*latest ids: req-"):
        store.get("req-missing")
    with pytest.raises(CodeunlearnError, match="status 'finished'"):
        store.mark(request, "finished")


def test_topic_hash_covers_the_examples_file_content(tmp_path: Path):
    examples = tmp_path / "forget.jsonl"
    examples.write_text('{"text": "a"}\n')
    topic = TopicConfig(label=None, examples_file=str(examples))
    before = topic_hash(topic)
    examples.write_text('{"text": "b"}\n')
    assert topic_hash(topic) != before
    assert topic_hash(TopicConfig(label="noun.food")) != topic_hash(TopicConfig(label="noun.animal"))


def test_topic_key_and_tracked_params_hide_keywords_and_files(tmp_path: Path):
    from codeunlearn.core.config import RunConfig

    keywords = TopicConfig(label=None, keywords=("julien",))
    assert keywords.key.startswith("keywords-") and "julien" not in keywords.key
    assert TopicConfig(label="noun.food").key == "noun.food"
    params = public_params(RunConfig(topic=keywords))
    assert params["topic.keywords"].startswith("sha256:") and "julien" not in "".join(params.values())


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from codeunlearn.requests.queue import RequestStore
with RequestStore(Path(sys.argv[1])).exclusive():
    print("locked", flush=True)
    time.sleep(120)
"""


def test_processing_lock_excludes_others_and_is_freed_when_its_holder_is_killed(store: RequestStore):
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(store.store.root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(CodeunlearnError, match="another process has held"), store.exclusive(wait_s=1.0):
            pass
        assert time.monotonic() - started >= 1.0
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        with store.exclusive(wait_s=5.0):  # the kernel released the dead holder's lock
            pass
    finally:
        holder.kill()


def test_events_written_before_attempts_existed_read_as_zero_attempts(store: RequestStore):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from codeunlearn.store.schema import REQUEST_EVENTS_SCHEMA

    request = store.add(TopicConfig(label="noun.food"), "m", "1")
    event = store.store.root / "requests" / f"{request.request_id}-old.parquet"
    old_schema = pa.schema([field for field in REQUEST_EVENTS_SCHEMA if field.name != "attempts"])
    row = {name: [getattr(request, name, None)] for name in old_schema.names if name != "seq"}
    for path in (store.store.root / "requests").glob("*.parquet"):
        path.unlink()
    pq.write_table(pa.table({**row, "seq": [1]}).select(old_schema.names).cast(old_schema), event)

    (old,) = store.list()
    assert (old.request_id, old.status, old.attempts) == (request.request_id, "pending", 0)
    store.mark(old, "processing", attempts=1)
    assert store.get(request.request_id).attempts == 1


def test_events_written_before_the_answer_was_recorded_read_as_not_recorded(store: RequestStore):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from codeunlearn.store.schema import REQUEST_EVENTS_SCHEMA

    request = store.add(TopicConfig(label="noun.food"), "m", "1")
    done = replace(request, status="done", mask_version="2", mask_digest="d")
    event = store.store.root / "requests" / f"{request.request_id}-old.parquet"
    old_schema = pa.schema([field for field in REQUEST_EVENTS_SCHEMA if field.name not in ANSWER_FIELDS])
    row = {name: [getattr(done, name, None)] for name in old_schema.names if name != "seq"}
    pq.write_table(pa.table({**row, "seq": [2**62]}).select(old_schema.names).cast(old_schema), event)

    old = store.get(request.request_id)
    assert (old.status, old.mask_version) == ("done", "2")
    assert (old.chosen_n_select, old.frontier, old.test_forget_drop, old.test_retain_drop) == (None,) * 4
    assert describe(old) == ["calibration    none recorded"]
    assert describe(request) == ["calibration    not answered yet"]


FRONTIER = (
    Point(4, 0.25, 0.01, 0.2, 0.001),
    Point(8, 0.875, 0.03125, 0.7, 0.003),
    Point(16, 1.5, 0.5, 1, 0.1),
)


def test_the_answer_is_recorded_whole_and_read_back_by_python_and_sql(store: RequestStore):
    request = store.add(TopicConfig(label="noun.food"), "m", "1")
    answer = {
        "chosen_n_select": 8,
        "frontier": FRONTIER,
        "test_forget_drop": 0.75,
        "test_retain_drop": math.nan,
    }
    store.mark(request, "done", mask_version="3", **answer)

    done = store.get(request.request_id)
    assert (done.chosen_n_select, done.frontier, done.test_forget_drop) == (8, FRONTIER, 0.75)
    assert math.isnan(done.test_retain_drop)  # an undefined drop stays undefined, not 0 or None
    store.mark(done, "reverted", mask_version="4")  # later events keep the answer
    assert store.get(request.request_id).frontier == FRONTIER
    rows = CodeStore(store.store.root).sql(
        "SELECT chosen_n_select, len(frontier) AS n, frontier[2].forget_drop AS f FROM requests"
    )
    assert rows.to_pylist() == [{"chosen_n_select": 8, "n": 3, "f": 0.875}]

    uncalibrated = store.mark(store.add(TopicConfig(label="noun.animal"), "m", "1"), "done", frontier=())
    assert store.get(uncalibrated.request_id).frontier == ()  # off, not "not recorded"


def _table_rows(lines: list[str]) -> list[list[str]]:
    rows = [line for line in "\n".join(lines).splitlines() if line.startswith("| ") and "S'" not in line]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in rows]


def test_describe_shows_the_chosen_size_the_frontier_and_the_test_result_beside_it(store: RequestStore):
    request = store.add(TopicConfig(label="noun.food"), "m", "1")
    done = replace(request, status="done", chosen_n_select=8, frontier=FRONTIER)
    done = replace(done, test_forget_drop=0.75, test_retain_drop=0.0625)

    lines = describe(done)

    assert lines[0] == "calibration    S' = 8 chosen on the validation split (3 sizes scored)"
    assert _table_rows(lines) == [
        ["4", "0.250", "0.010", "", ""],
        ["8 (chosen)", "0.875", "0.031", "0.750", "0.062"],
        ["16", "1.500", "0.500", "", ""],
    ]
    assert lines[-1] == (
        "test           at S' = 8: forget drop 0.750 (validation 0.875), retain drop 0.062 (validation "
        "0.031) on the held-out test split"
    )

    rejected = replace(request, status="rejected", error="calibration: best validation point S' = 8: ...")
    lines = describe(replace(rejected, frontier=FRONTIER))
    assert lines[0] == "calibration    no S' clears both gates on the validation split (3 sizes scored)"
    assert [row[0] for row in _table_rows(lines)] == ["4", "8", "16"] and "test" not in "\n".join(lines)
    assert describe(replace(rejected, frontier=())) == ["calibration    no S' to try"]

    uncalibrated = replace(done, chosen_n_select=None, frontier=())
    assert describe(uncalibrated) == [
        "calibration    off (calibration.grid is empty): the mask holds the mined S'",
        "test           forget drop 0.750, retain drop 0.062 (held-out)",
    ]


def test_only_failed_requests_can_be_retried_and_start_again_from_zero(store: RequestStore):
    request = store.add(TopicConfig(label="noun.food"), "m", "1")
    with pytest.raises(CodeunlearnError, match="only failed requests can be retried"):
        store.retry(request.request_id)
    store.mark(request, "failed", attempts=3, error="gave up after 3 attempts: OSError")
    retried = store.retry(request.request_id)
    assert (retried.status, retried.attempts, retried.error) == ("pending", 0, "")
    assert [r.request_id for r in store.open_requests()] == [request.request_id]


def test_registered_names_are_scoped_to_the_run_directory(tmp_path: Path):
    from codeunlearn.core.config import RunConfig
    from codeunlearn.tracking.tracker import Tracker, registered_prefix

    base = RunConfig()
    base = replace(base, tracking=replace(base.tracking, state_dir=str(tmp_path / "state")))
    first = replace(base, run_dir=str(tmp_path / "a"))
    second = replace(base, run_dir=str(tmp_path / "b"))
    assert registered_prefix(first) != registered_prefix(second)
    assert registered_prefix(first) == registered_prefix(
        replace(first, run_dir=str(tmp_path / "x" / ".." / "a"))
    )
    a, b = Tracker(first), Tracker(second)
    assert a.masked_name != b.masked_name and a.codebook_name != b.codebook_name
    assert a.masked_name.startswith("smollm2") and a.experiment_id == b.experiment_id  # one experiment
    named = replace(first, tracking=replace(first.tracking, model_name="shared"))
    assert Tracker(named).masked_name == "shared-masked"  # an explicit prefix is kept as given


def test_a_request_waiting_for_its_retry_is_not_due_before_its_time(tmp_path):
    requests = RequestStore(tmp_path / "store")
    waiting = requests.add(TopicConfig(label="noun.food"), "m", "1")
    fresh = requests.add(TopicConfig(label="noun.animal"), "m", "1")
    now = datetime.now(UTC)
    requests.mark(waiting, "pending", attempts=1, not_before=now + timedelta(seconds=60))

    assert [r.request_id for r in requests.due_requests(now)] == [fresh.request_id]
    later = [r.request_id for r in requests.due_requests(now + timedelta(seconds=61))]
    assert later == [waiting.request_id, fresh.request_id]
    assert requests.get(waiting.request_id).not_before == now + timedelta(seconds=60)


def test_events_are_numbered_in_the_order_they_were_written(tmp_path):
    requests = RequestStore(tmp_path / "store")
    request = requests.add(TopicConfig(label="noun.food"), "m", "1")
    for status in ("processing", "pending", "processing", "done"):
        request = requests.mark(request, status)
    rows = requests.store.sql("SELECT seq, status FROM request_events ORDER BY seq").to_pylist()
    assert [row["status"] for row in rows] == ["pending", "processing", "pending", "processing", "done"]
    assert [row["seq"] for row in rows] == list(range(1, 6))
    # another store object (another process) continues the same sequence
    RequestStore(tmp_path / "store").mark(request, "reverting")
    assert requests.store.sql("SELECT max(seq) AS seq FROM request_events").to_pylist() == [{"seq": 6}]
