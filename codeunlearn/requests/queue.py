"""Deletion requests: records with an id and a status, kept as an append-only event log in the code store.

Each change of a request appends one Parquet file holding its whole new state; the `requests` view
picks each request's latest event. Nothing is ever rewritten, so a crash loses at most the event
being written, and the history of every request stays queryable (`request_events`).

Processing is serialised by an exclusive `flock` on `<store>/requests.lock` (codeunlearn.core.file_lock;
every writer of the active mask takes the same lock): the kernel releases it when its holder dies, even
by SIGKILL, so a killed run never blocks the next one, and whatever the killed run left in `processing`
is taken up again by the next holder (its `attempts` count that).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from codeunlearn.core.config import TopicConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.file_lock import exclusive_lock, write_durably
from codeunlearn.data.forgotten import REQUEST_SOURCE_PREFIX
from codeunlearn.store.code_store import CodeStore
from codeunlearn.store.schema import REQUEST_EVENTS_SCHEMA
from codeunlearn.unlearning.calibration import Point

# superseded: carried to a retrained codebook as a new request (codeunlearn.requests.lineage)
STATUSES = ("pending", "processing", "done", "rejected", "failed", "reverting", "reverted", "superseded")
# open: the next processor run takes them; it finds "processing" or "reverting" only after a dead run
OPEN_STATUSES = ("pending", "processing", "reverting")
SEQ_FILE = "requests.seq"  # the number of the last event written to the store
_seq_guard = threading.Lock()  # the file lock is per process; this serialises its threads


@dataclass(frozen=True)
class DeletionRequest:
    """One request: what to forget, from which registered codebook version, and how it went."""

    request_id: str
    topic_kind: str
    topic_spec: str  # JSON of the topic's value
    topic_hash: str
    model_name: str
    model_version: str
    submitted_at: datetime
    status: str = "pending"
    error: str = ""
    mask_version: str = ""
    mask_digest: str = ""
    updated_at: datetime | None = None
    worker: str = ""
    attempts: int = 0  # times processing was started (a killed run's attempt counts)
    not_before: datetime | None = None  # a failed attempt's retry waits until then (backoff)
    # how it was answered, recorded when it is done or rejected (None: not recorded, as in events
    # written before these fields existed)
    chosen_n_select: int | None = None  # the S' calibration chose on validation; None: none passed
    frontier: tuple[Point, ...] | None = None  # every S' calibration scored; (): not calibrated
    test_forget_drop: float | None = None  # held-out test drops of the mask version it was promoted
    test_retain_drop: float | None = None  # or failed on

    def topic(self, caps: TopicConfig) -> TopicConfig:
        """The request's topic with the size caps of `caps`."""
        value = json.loads(self.topic_spec)
        cleared = {"label": None, "keywords": (), "regex": None, "examples_file": None}
        value = tuple(value) if self.topic_kind == "keywords" else value
        return replace(caps, **{**cleared, self.topic_kind: value})


def topic_hash(topic: TopicConfig) -> str:
    """sha256 of the topic's kind and value, and of the examples file's bytes when it names one."""
    digest = hashlib.sha256(json.dumps([topic.kind, _spec_value(topic)]).encode())
    if topic.kind == "examples_file":
        path = Path(str(topic.examples_file))
        if not path.is_file():
            raise CodeunlearnError(
                f"examples file {path} does not exist: pass an existing .jsonl/.csv/.parquet"
            )
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _spec_value(topic: TopicConfig) -> object:
    value = getattr(topic, topic.kind)
    if topic.kind == "keywords":
        return list(value)
    if topic.kind == "examples_file":
        return str(Path(str(value)).resolve())
    return value


def _now() -> datetime:
    return datetime.now(UTC)


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class RequestStore:
    """Add, read and update deletion requests in the code store at `store_root`."""

    def __init__(self, store_root: Path) -> None:
        self.store = CodeStore(store_root)
        self.lock_path = Path(store_root) / "requests.lock"

    def add(self, topic: TopicConfig, model_name: str, model_version: str) -> DeletionRequest:
        """Record a pending request (the caller has checked the topic and the model version)."""
        request = DeletionRequest(
            request_id=f"{REQUEST_SOURCE_PREFIX}{uuid.uuid4().hex[:12]}",
            topic_kind=topic.kind,
            topic_spec=json.dumps(_spec_value(topic)),
            topic_hash=topic_hash(topic),
            model_name=model_name,
            model_version=str(model_version),
            submitted_at=_now(),
        )
        self._write(request)
        return request

    def get(self, request_id: str) -> DeletionRequest:
        rows = self._query("SELECT * FROM requests WHERE request_id = $id", {"id": request_id})
        if not rows:
            known = ", ".join(r.request_id for r in self.list()[-5:]) or "none yet"
            raise CodeunlearnError(
                f"no deletion request {request_id!r} in {self.store.root}; latest ids: {known} "
                "(list them with `codeunlearn request list`)"
            )
        return rows[0]

    def list(self, statuses: tuple[str, ...] = ()) -> list[DeletionRequest]:
        """Requests in submission order, optionally only those with one of `statuses`."""
        where = "WHERE list_contains($statuses, status)" if statuses else ""
        return self._query(
            f"SELECT * FROM requests {where} ORDER BY submitted_at, request_id",
            {"statuses": list(statuses)} if statuses else None,
        )

    def open_requests(self) -> list[DeletionRequest]:
        return self.list(OPEN_STATUSES)

    def due_requests(self, now: datetime | None = None) -> list[DeletionRequest]:
        """The open requests a run may take now: those whose retry wait (`not_before`) is over."""
        now = now or _now()
        return [r for r in self.open_requests() if r.not_before is None or r.not_before <= now]

    def mark(self, request: DeletionRequest, status: str, **changes: object) -> DeletionRequest:
        """Append the request's new state."""
        if status not in STATUSES:
            raise CodeunlearnError(f"status {status!r}: use one of {', '.join(STATUSES)}")
        updated = replace(request, status=status, **changes)
        self._write(updated)
        return updated

    def retry_later(
        self, request: DeletionRequest, status: str, reason: str, backoff_s: float
    ) -> DeletionRequest:
        """Leave the request in `status` for another attempt in `backoff_s` seconds, saying why this
        attempt ended."""
        return self.mark(
            request,
            status,
            error=f"attempt {request.attempts}: {reason}",
            not_before=datetime.now(UTC) + timedelta(seconds=backoff_s),
        )

    def retry(self, request_id: str) -> DeletionRequest:
        """Put a failed request back to pending, with its attempts counted from zero again."""
        request = self.get(request_id)
        if request.status != "failed":
            raise CodeunlearnError(
                f"request {request_id} is {request.status}; only failed requests can be retried"
                + (" (submit a new request to try other gates)" if request.status == "rejected" else "")
            )
        return self.mark(request, "pending", attempts=0, error="", not_before=None)

    def exclusive(self, wait_s: float = 600.0) -> AbstractContextManager[None]:
        """Hold the processing lock; wait up to `wait_s` for another processor to finish."""
        return exclusive_lock(self.lock_path, wait_s)

    def _write(self, request: DeletionRequest) -> None:
        stamped = replace(request, updated_at=_now(), worker=_worker())
        row = {name: getattr(stamped, name, None) for name in REQUEST_EVENTS_SCHEMA.names}
        row["seq"] = self._next_seq()
        if stamped.frontier is not None:
            row["frontier"] = [point.row() for point in stamped.frontier]
        table = pa.Table.from_pylist([row], schema=REQUEST_EVENTS_SCHEMA)
        self.store.append("request_events", table, prefix=request.request_id)

    def _next_seq(self) -> int:
        """One more than the store's last event number: a sequence that orders the events of every
        process writing to the store, whatever their clocks say."""
        counter = self.store.root / SEQ_FILE
        with _seq_guard, exclusive_lock(self.store.root / "requests-seq.lock", 60.0):
            last = int(counter.read_text()) if counter.is_file() else self._last_seq()
            write_durably(counter, str(last + 1))
        return last + 1

    def _last_seq(self) -> int:
        """The largest event number written so far (before the counter file existed, nanoseconds)."""
        try:
            return int(
                self.store.sql("SELECT coalesce(max(seq), 0) AS seq FROM request_events")["seq"][0].as_py()
            )
        except CodeunlearnError:  # no event yet: the view does not exist
            return 0

    def _query(self, sql: str, params: dict | None) -> list[DeletionRequest]:
        table = self.store.sql(sql, params)
        return [_request(row) for row in table.to_pylist()]


# NULL in events written before the field existed (or, for the last four, not recorded yet)
_MISSING = {
    "updated_at": None,
    "attempts": 0,
    "not_before": None,
    "chosen_n_select": None,
    "frontier": None,
    "test_forget_drop": None,
    "test_retain_drop": None,
}


def _request(row: dict) -> DeletionRequest:
    fields = DeletionRequest.__dataclass_fields__
    values = {k: (_MISSING.get(k, "") if v is None else v) for k, v in row.items() if k in fields}
    if values["frontier"] is not None:
        values["frontier"] = tuple(Point.from_row(point) for point in values["frontier"])
    return DeletionRequest(**values)


def failure_reason(error: Exception) -> str:
    """What a person reads about a failed attempt: a CodeunlearnError says it in full, anything else
    is named by its type."""
    return str(error) if isinstance(error, CodeunlearnError) else f"{type(error).__name__}: {error}"
