"""The one owner of a run directory's active mask (`<run_dir>/masks/active.json`).

Every writer (the `unlearn` stage, `unlearn --remove`, the tracked pipeline's evaluate, a deletion
request's activation and revert) goes through `update_active`, under the run's processing lock (the
lock deletion requests are answered under, `RunPaths.lock_file`). It reads the mask, applies the
change, appends the change to `masks/journal.jsonl`, and writes the result durably.

A new mask is first written as a *candidate* (`masks/candidate.json`), evaluated, and activated only
if it clears its gates; `activate` refuses a candidate built on a mask that is no longer active, so a
deletion activated meanwhile is never dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.failpoints import failpoint
from codeunlearn.core.file_lock import exclusive_lock
from codeunlearn.core.paths import RunPaths
from codeunlearn.unlearning.masks import Mask, load_mask, mask_notes, save_mask
from codeunlearn.unlearning.recipe import with_source

CANDIDATE_FILE = "candidate.json"
JOURNAL_FILE = "journal.jsonl"


@dataclass(frozen=True)
class Candidate:
    """A mask waiting for its evaluation, and the digest of the active mask it was built on."""

    mask: Mask
    base_digest: str  # "" when there was no active mask


def read_active(paths: RunPaths) -> Mask | None:
    """The active mask, or None before any was activated."""
    return load_mask(paths.active_mask) if paths.active_mask.is_file() else None


def candidate_path(paths: RunPaths) -> Path:
    return paths.masks_dir / CANDIDATE_FILE


def propose(paths: RunPaths, new: Mask) -> Candidate:
    """Write the active mask with `new`'s sources added (each replacing an earlier source of the same
    name) as the run's candidate; the active mask is untouched."""
    active = read_active(paths)
    candidate = Candidate(with_source(active or Mask(new.n_codes), new), active.digest if active else "")
    save_mask(candidate.mask, candidate_path(paths), {"base_digest": candidate.base_digest})
    return candidate


def read_candidate(paths: RunPaths) -> Candidate:
    """The candidate `propose` wrote last."""
    path = candidate_path(paths)
    if not path.is_file():
        raise CodeunlearnError(f"no candidate mask at {path}: run the unlearn stage first")
    return Candidate(load_mask(path), mask_notes(path).get("base_digest", ""))


def activate(
    paths: RunPaths, mask: Mask, action: str, base_digest: str | None = None, wait_s: float = 600.0
) -> Mask:
    """Make `mask` the active mask. With `base_digest` (a candidate's), only if the active mask is
    still the one it was built on.

    Raises:
        CodeunlearnError: the active mask changed since the candidate was built.
    """

    def replace_with(current: Mask | None) -> Mask:
        current_digest = current.digest if current else ""
        if base_digest is not None and current_digest not in (base_digest, mask.digest):
            raise CodeunlearnError(
                f"the active mask changed ({base_digest[:12] or 'none'} -> {current_digest[:12]}) since "
                f"candidate {mask.digest[:12]} was built on it: run the pipeline again"
            )
        return mask

    return update_active(paths, replace_with, action, wait_s)


def update_active(
    paths: RunPaths, change: Callable[[Mask | None], Mask], action: str, wait_s: float = 600.0
) -> Mask:
    """Under the run's processing lock: apply `change` to the active mask (None when there is none),
    record it in the journal, and write the result durably (and a copy as `mask-<digest>.json`).

    Args:
        paths: The run directory.
        change: The new mask from the current one; raising leaves everything as it was.
        action: What the change is, `<kind>:<name>` (`pipeline:<topic>`, `request:<id>`,
            `revert:<id>`, `remove:<source>`), kept in the journal.
        wait_s: How long to wait for another holder of the lock.
    """
    with exclusive_lock(paths.lock_file, wait_s):
        mask = change(read_active(paths))
        _append_journal(paths, action, mask)  # first: an entry never missing for an active source
        save_mask(mask, paths.masks_dir / f"mask-{mask.digest[:12]}.json")
        failpoint("before-save-mask")
        save_mask(mask, paths.active_mask)
        failpoint("after-save-mask")
    return mask


def read_journal(paths: RunPaths) -> list[dict]:
    """Every recorded change of the active mask, oldest first: `at`, `action`, `digest` and `sources`
    (each source's code ids by name)."""
    path = paths.masks_dir / JOURNAL_FILE
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a crash: its change was never written
            continue
    return entries


def _append_journal(paths: RunPaths, action: str, mask: Mask) -> None:
    entry = {
        "at": datetime.now(UTC).isoformat(),
        "action": action,
        "digest": mask.digest,
        "sources": {source.name: list(source.code_ids) for source in mask.sources},
    }
    paths.masks_dir.mkdir(parents=True, exist_ok=True)
    with (paths.masks_dir / JOURNAL_FILE).open("a") as handle:
        handle.write(json.dumps(entry) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
