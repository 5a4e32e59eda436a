"""The active mask's one owner: candidates leave it alone, activation is checked against the mask a
candidate was built on, every change is journalled, and every write waits for the processing lock
that deletion requests are answered under."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.paths import RunPaths
from codeunlearn.requests.queue import RequestStore
from codeunlearn.unlearning.active_mask import (
    activate,
    propose,
    read_active,
    read_candidate,
    read_journal,
    update_active,
)
from codeunlearn.unlearning.masks import mask_from_codes


@pytest.fixture
def paths(tmp_path: Path) -> RunPaths:
    return RunPaths(tmp_path / "run")


def test_a_candidate_is_active_only_once_activated(paths: RunPaths):
    food = propose(paths, mask_from_codes(16, "noun.food", [1, 2]))
    assert read_active(paths) is None and food.base_digest == ""
    activate(paths, food.mask, "pipeline:noun.food", food.base_digest)

    animal = propose(paths, mask_from_codes(16, "noun.animal", [3]))
    assert read_candidate(paths) == animal and animal.base_digest == food.mask.digest
    assert read_active(paths) == food.mask  # the candidate did not touch it
    assert [s.name for s in animal.mask.sources] == ["noun.food", "noun.animal"]
    assert (paths.masks_dir / f"mask-{food.mask.digest[:12]}.json").is_file()
    assert [(e["action"], e["sources"]) for e in read_journal(paths)] == [
        ("pipeline:noun.food", {"noun.food": [1, 2]})
    ]


def test_a_candidate_built_on_a_mask_no_longer_active_is_refused(paths: RunPaths):
    stale = propose(paths, mask_from_codes(16, "noun.food", [1]))
    request = mask_from_codes(16, "req-1", [5])
    activate(paths, request, "request:req-1")  # activated meanwhile

    with pytest.raises(CodeunlearnError, match="the active mask changed"):
        activate(paths, stale.mask, "pipeline:noun.food", stale.base_digest)
    assert read_active(paths) == request
    assert [e["action"] for e in read_journal(paths)] == ["request:req-1"]


def test_a_failed_change_writes_nothing_and_a_torn_journal_line_is_skipped(paths: RunPaths):
    activate(paths, mask_from_codes(16, "req-1", [5]), "request:req-1")

    def refuse(current):
        raise CodeunlearnError("no")

    with pytest.raises(CodeunlearnError, match="no"):
        update_active(paths, refuse, "remove:req-1")
    (paths.masks_dir / "journal.jsonl").open("a").write('{"action": "torn')
    assert [e["action"] for e in read_journal(paths)] == ["request:req-1"]
    assert not list(paths.masks_dir.glob("*.partial"))


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from codeunlearn.requests.queue import RequestStore
with RequestStore(Path(sys.argv[1])).exclusive():
    print("locked", flush=True)
    time.sleep(120)
"""


def test_writes_wait_for_the_request_processing_lock(paths: RunPaths):
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(paths.store_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CodeunlearnError, match="another process has held"):
            activate(paths, mask_from_codes(16, "noun.food", [1]), "pipeline:noun.food", wait_s=1.0)
        assert read_active(paths) is None
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_thread_of_the_holding_process_writes_at_once(paths: RunPaths):
    written = []
    with RequestStore(paths.store_dir).exclusive(wait_s=1.0):
        worker = threading.Thread(
            target=lambda: written.append(activate(paths, mask_from_codes(16, "req-1", [2]), "request:req-1"))
        )
        worker.start()
        worker.join(timeout=30)
    assert written and read_active(paths) == written[0]
    with RequestStore(paths.store_dir).exclusive(wait_s=1.0):  # released once the holder left
        pass
