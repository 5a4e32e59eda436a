"""An exclusive lock on a file (`flock`), held by a process, and durable atomic file writes.

The kernel releases a `flock` when its holder dies, even by SIGKILL, so a killed holder never blocks
the next one. The lock is held per process: a thread of the process that holds it enters at once
(a Prefect flow holds it while its tasks run in worker threads); the last one out releases it.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codeunlearn.core.errors import CodeunlearnError

_guard = threading.Lock()
_held: dict[str, tuple[int, int]] = {}  # resolved lock path -> (open descriptor, depth) in this process


@contextmanager
def exclusive_lock(path: Path, wait_s: float = 600.0) -> Iterator[None]:
    """Hold the exclusive lock on `path`; wait up to `wait_s` for another process to release it.

    Raises:
        CodeunlearnError: another process held it for longer than `wait_s`.
    """
    key = str(Path(path).resolve())
    with _guard:
        entered = key in _held
        if entered:
            descriptor, depth = _held[key]
            _held[key] = (descriptor, depth + 1)
    if not entered:
        descriptor = _acquire(Path(path), wait_s)
        with _guard:
            _held[key] = (descriptor, 1)
    try:
        yield
    finally:
        with _guard:
            descriptor, depth = _held[key]
            if depth > 1:
                _held[key] = (descriptor, depth - 1)
            else:
                del _held[key]
                fcntl.flock(descriptor, fcntl.LOCK_UN)
                os.close(descriptor)


def holds_lock(path: Path) -> bool:
    """Whether this process holds the lock on `path`."""
    with _guard:
        return str(Path(path).resolve()) in _held


def _acquire(path: Path, wait_s: float) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return descriptor
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(descriptor)
                raise CodeunlearnError(
                    f"another process has held {path} for over {wait_s:.0f} s; "
                    "wait for it to finish (a dead holder releases it automatically)"
                ) from None
            time.sleep(0.2)


def write_durably(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash leaves the old or the new content, never a mix, and
    the new content survives a power loss once this returns: temporary file, fsync, rename, fsync of
    the directory (the rename itself is only durable once the directory is on disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
