"""The one owner of a run directory's active mask (`<run_dir>/masks/active.json`).

Every writer (the `unlearn` stage, `unlearn --remove`, the tracked pipeline's evaluate, a deletion
request's activation and revert) goes through `update_active`, under the run's processing lock (the
lock deletion requests are answered under, `RunPaths.lock_file`). It reads the mask, applies the
change, appends the change to `masks/journal.jsonl`, and writes the result durably.

A new mask is first written as a *candidate* (`masks/candidate.json`), evaluated, and activated only
if it clears its gates; `activate` refuses a candidate built on a mask that is no longer active, so a
deletion activated meanwhile is never dropped.

Code ids mean something only over the codebook they were mined on. The active mask (and each journal
entry) records the weights hash of the run's codebook model it is over (`weights_sha256`); reading it
while `<run_dir>/model` holds other weights raises. When training writes new weights, `start_lineage`
archives the old lineage's mask under `masks/lineages/<old hash 12>/` and starts the active mask
empty for the new codebook (journal entry `retrain:<new hash 12>`).
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
from codeunlearn.model.surgery import weights_hash
from codeunlearn.unlearning.masks import Mask, load_mask, mask_notes, save_mask
from codeunlearn.unlearning.recipe import with_source

CANDIDATE_FILE = "candidate.json"
JOURNAL_FILE = "journal.jsonl"
LINEAGES_DIR = "lineages"
WEIGHTS = "weights_sha256"  # the note and journal key naming the codebook a mask is over
RETRAIN = "retrain"  # the journal action kind that starts a new lineage
_hashes: dict[tuple, str] = {}  # weights hashes by the weight files' identity and stat


@dataclass(frozen=True)
class Candidate:
    """A mask waiting for its evaluation, and the digest of the active mask it was built on."""

    mask: Mask
    base_digest: str  # "" when there was no active mask
    weights: str = ""  # the codebook's weights hash it was built over ("" when none was saved)


def codebook_weights(paths: RunPaths) -> str:
    """The weights hash (`weights_hash`) of the run's saved codebook model; "" before one is saved.
    Kept per process by the weight files' stat, so each read of the active mask costs no rehash."""
    files = sorted(paths.model_dir.rglob("*.safetensors")) if paths.model_dir.is_dir() else []
    if not files:
        return ""
    stats = [(f.stat(), str(f)) for f in files]
    key = tuple((name, st.st_ino, st.st_size, st.st_mtime_ns) for st, name in stats)
    if key not in _hashes:
        _hashes[key] = weights_hash(paths.model_dir)
    return _hashes[key]


def mask_weights(path: Path) -> str:
    """The weights hash a saved mask records being over ("" for a mask saved before masks recorded it)."""
    return mask_notes(path).get(WEIGHTS, "")


def read_active(paths: RunPaths, weights: str | None = None) -> Mask | None:
    """The active mask, or None before any was activated.

    Args:
        paths: The run directory.
        weights: The codebook's weights hash, when the caller has it (default: the saved model's).

    Raises:
        CodeunlearnError: the mask is over another codebook than the one in `<run_dir>/model`; its code
            ids would name other codes.
    """
    if not paths.active_mask.is_file():
        return None
    over = mask_weights(paths.active_mask)
    current = codebook_weights(paths) if weights is None else weights
    if over and current and over != current:
        raise CodeunlearnError(
            f"the active mask {paths.active_mask} is over codebook weights {over[:12]}, but "
            f"{paths.model_dir} holds weights {current[:12]}: its code ids name other codes there. The "
            "codebook was replaced without starting a new lineage: run `codeunlearn train` (or the "
            "pipeline), which archives the old mask under masks/lineages/ and starts an empty one"
        )
    return load_mask(paths.active_mask)


def candidate_path(paths: RunPaths) -> Path:
    return paths.masks_dir / CANDIDATE_FILE


def propose(paths: RunPaths, new: Mask) -> Candidate:
    """Write the active mask with `new`'s sources added (each replacing an earlier source of the same
    name) as the run's candidate; the active mask is untouched."""
    weights = codebook_weights(paths)
    active = read_active(paths, weights)
    candidate = Candidate(
        with_source(active or Mask(new.n_codes), new), active.digest if active else "", weights
    )
    save_mask(candidate.mask, candidate_path(paths), {"base_digest": candidate.base_digest, WEIGHTS: weights})
    return candidate


def read_candidate(paths: RunPaths) -> Candidate:
    """The candidate `propose` wrote last."""
    path = candidate_path(paths)
    if not path.is_file():
        raise CodeunlearnError(f"no candidate mask at {path}: run the unlearn stage first")
    notes = mask_notes(path)
    return Candidate(load_mask(path), notes.get("base_digest", ""), notes.get(WEIGHTS, ""))


def activate(
    paths: RunPaths,
    mask: Mask,
    action: str,
    base_digest: str | None = None,
    wait_s: float = 600.0,
    over: str = "",
) -> Mask:
    """Make `mask` the active mask. With `base_digest` (a candidate's), only if the active mask is
    still the one it was built on; with `over` (a candidate's weights hash), only if the run's
    codebook still has those weights.

    Raises:
        CodeunlearnError: the active mask changed, or the codebook was retrained, since the candidate
            was built.
    """

    def replace_with(current: Mask | None) -> Mask:
        weights = codebook_weights(paths)
        if over and weights and over != weights:
            raise CodeunlearnError(
                f"candidate {mask.digest[:12]} was built over codebook weights {over[:12]}, but the run's "
                f"codebook now has weights {weights[:12]}: run the pipeline again"
            )
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
        weights = codebook_weights(paths)
        mask = change(read_active(paths, weights))
        _append_journal(paths, action, mask, weights)  # first: an entry never missing for an active source
        notes = {WEIGHTS: weights} if weights else None
        save_mask(mask, paths.masks_dir / f"mask-{mask.digest[:12]}.json", notes)
        failpoint("before-save-mask")
        save_mask(mask, paths.active_mask, notes)
        failpoint("after-save-mask")
    return mask


def start_lineage(paths: RunPaths, n_codes: int, previous: str = "", wait_s: float = 600.0) -> Path | None:
    """After training wrote the run's codebook: if the active mask is over other weights, archive it
    (`masks/lineages/<its hash 12>/active.json`) and start an empty active mask over `n_codes` codes
    of the new codebook. Nothing happens when the mask is over these weights, or there is none.

    Args:
        paths: The run directory.
        n_codes: The new codebook's size.
        previous: The weights hash of the model training replaced; an active mask saved before masks
            recorded their codebook is taken to be over it ("": over the current one).
        wait_s: How long to wait for another holder of the processing lock.

    Returns:
        Where the old lineage's mask was archived, or None.
    """
    with exclusive_lock(paths.lock_file, wait_s):
        weights = codebook_weights(paths)
        if not weights or not paths.active_mask.is_file():
            return None
        over = mask_weights(paths.active_mask) or previous or weights
        if over == weights:
            return None
        old = load_mask(paths.active_mask)
        archive = _archive_path(paths, over)
        save_mask(old, archive, {WEIGHTS: over})
        empty = Mask(n_codes)
        extra = {"previous_weights_sha256": over, "previous_digest": old.digest}
        _append_journal(paths, f"{RETRAIN}:{weights[:12]}", empty, weights, extra)
        save_mask(empty, paths.active_mask, {WEIGHTS: weights})
    return archive


def _archive_path(paths: RunPaths, weights: str) -> Path:
    """`lineages/<hash 12>/active.json`, or `active.<n>.json` when that lineage was archived before
    (a codebook trained back to earlier weights)."""
    directory = paths.masks_dir / LINEAGES_DIR / weights[:12]
    path, n = directory / "active.json", 1
    while path.exists():
        path, n = directory / f"active.{n}.json", n + 1
    return path


def read_journal(paths: RunPaths) -> list[dict]:
    """Every recorded change of the active mask, oldest first: `at`, `action`, `digest`, `sources`
    (each source's code ids by name) and, when the codebook was saved, `weights_sha256`."""
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


def lineage_journal(paths: RunPaths) -> list[dict]:
    """The journal entries of the current lineage: those after the last `retrain:` entry."""
    entries = read_journal(paths)
    starts = [i for i, e in enumerate(entries) if e["action"].partition(":")[0] == RETRAIN]
    return entries[starts[-1] + 1 :] if starts else entries


def _append_journal(
    paths: RunPaths, action: str, mask: Mask, weights: str, extra: dict[str, str] | None = None
) -> None:
    entry = {
        "at": datetime.now(UTC).isoformat(),
        "action": action,
        "digest": mask.digest,
        "sources": {source.name: list(source.code_ids) for source in mask.sources},
        **({WEIGHTS: weights} if weights else {}),
        **(extra or {}),
    }
    paths.masks_dir.mkdir(parents=True, exist_ok=True)
    with (paths.masks_dir / JOURNAL_FILE).open("a") as handle:
        handle.write(json.dumps(entry) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
