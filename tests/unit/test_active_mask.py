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
from codeunlearn.model.surgery import weights_hash
from codeunlearn.requests.queue import RequestStore
from codeunlearn.unlearning.active_mask import (
    activate,
    lineage_journal,
    propose,
    read_active,
    read_candidate,
    read_journal,
    start_lineage,
    update_active,
)
from codeunlearn.unlearning.masks import Mask, load_mask, mask_from_codes, mask_notes, save_mask


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


def save_weights(paths: RunPaths, content: bytes) -> str:
    """A saved codebook model as far as its weights hash goes; contents of distinct sizes, so the
    per-process hash cache (keyed by the files' stat) sees each rewrite."""
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    (paths.model_dir / "model.safetensors").write_bytes(content)
    return weights_hash(paths.model_dir)


def test_the_active_mask_records_its_codebook_and_is_never_read_over_other_weights(paths: RunPaths):
    old = save_weights(paths, b"old weights")
    food = mask_from_codes(16, "noun.food", [1, 2])
    activate(paths, food, "pipeline:noun.food")
    assert mask_notes(paths.active_mask) == {"weights_sha256": old}
    assert [e["weights_sha256"] for e in read_journal(paths)] == [old]
    assert read_active(paths) == food

    save_weights(paths, b"new weights, other size")  # replaced without starting a new lineage

    with pytest.raises(CodeunlearnError, match="is over codebook weights " + old[:12]):
        read_active(paths)
    with pytest.raises(CodeunlearnError, match="is over codebook weights"):
        propose(paths, mask_from_codes(16, "noun.animal", [3]))
    with pytest.raises(CodeunlearnError, match="is over codebook weights"):
        activate(paths, mask_from_codes(16, "req-1", [4]), "request:req-1")
    assert load_mask(paths.active_mask) == food and len(read_journal(paths)) == 1  # nothing written


def test_retraining_archives_the_lineage_and_starts_an_empty_mask(paths: RunPaths):
    old = save_weights(paths, b"old weights")
    food = mask_from_codes(16, "noun.food", [1, 2])
    activate(paths, food, "pipeline:noun.food")
    stale = propose(paths, mask_from_codes(16, "noun.animal", [3]))
    new = save_weights(paths, b"retrained weights")

    archive = start_lineage(paths, 32)

    assert archive == paths.masks_dir / "lineages" / old[:12] / "active.json"
    assert load_mask(archive) == food and mask_notes(archive) == {"weights_sha256": old}
    assert read_active(paths) == Mask(32) and mask_notes(paths.active_mask) == {"weights_sha256": new}
    last = read_journal(paths)[-1]
    assert last["action"] == f"retrain:{new[:12]}" and last["sources"] == {}
    assert (last["previous_weights_sha256"], last["previous_digest"]) == (old, food.digest)
    assert lineage_journal(paths) == []
    assert start_lineage(paths, 32) is None  # already the new codebook's lineage
    # a candidate mined on the old codebook never becomes active on the new one
    with pytest.raises(CodeunlearnError, match="was built over codebook weights"):
        activate(paths, stale.mask, "pipeline:noun.animal", over=read_candidate(paths).weights)
    animal = mask_from_codes(32, "noun.animal", [30])
    activate(paths, animal, "pipeline:noun.animal")
    assert [e["action"] for e in lineage_journal(paths)] == ["pipeline:noun.animal"]

    save_weights(paths, b"old weights")  # trained back: the earlier archive of that hash is kept
    start_lineage(paths, 32)
    assert load_mask(archive) == food
    assert load_mask(archive.parent.parent / new[:12] / "active.json") == animal
    assert read_active(paths) == Mask(32)


def test_a_mask_from_before_masks_recorded_their_codebook(paths: RunPaths):
    old = save_weights(paths, b"old weights")
    food = mask_from_codes(16, "noun.food", [1])
    paths.masks_dir.mkdir(parents=True)
    save_mask(food, paths.active_mask)  # no weights recorded
    assert read_active(paths) == food  # nothing to compare: taken to be over the saved codebook
    assert start_lineage(paths, 16) is None  # reused model: nothing to archive

    save_weights(paths, b"retrained weights")
    archive = start_lineage(paths, 16, previous=old)  # training names the weights it replaced

    assert archive is not None and load_mask(archive) == food and old[:12] in str(archive)
    assert read_active(paths) == Mask(16)
