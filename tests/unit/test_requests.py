"""The deletion-request store: an append-only event log in Parquet whose `requests` view gives each
request's current state, and the processing lock that a dead holder gives up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codeunlearn.core.config import TopicConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.requests.queue import RequestStore, topic_hash
from codeunlearn.store.code_store import CodeStore
from codeunlearn.tracking.tracker import public_params


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


def test_only_failed_requests_can_be_retried_and_start_again_from_zero(store: RequestStore):
    request = store.add(TopicConfig(label="noun.food"), "m", "1")
    with pytest.raises(CodeunlearnError, match="only failed requests can be retried"):
        store.retry(request.request_id)
    store.mark(request, "failed", attempts=3, error="gave up after 3 attempts: OSError")
    retried = store.retry(request.request_id)
    assert (retried.status, retried.attempts, retried.error) == ("pending", 0, "")
    assert [r.request_id for r in store.open_requests()] == [request.request_id]


def test_registered_names_are_scoped_to_the_run_directory(tmp_path: Path):
    from dataclasses import replace

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
