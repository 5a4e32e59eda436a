"""The invariant of a run directory's active mask: it is exactly the union of the codes of its `done`
deletion requests and of the topics the pipeline activated (each recorded in the mask's journal), over
the run's codebook. `codeunlearn doctor` prints what breaks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from codeunlearn.core.config import RunConfig
from codeunlearn.core.paths import RunPaths, run_paths
from codeunlearn.requests.queue import DeletionRequest, RequestStore
from codeunlearn.store.code_store import CodeStore
from codeunlearn.unlearning.active_mask import read_active, read_journal
from codeunlearn.unlearning.masks import Mask

REQUEST_PREFIX = "req-"


class ProductionRegistry(Protocol):
    """What the check reads from a model registry (codeunlearn.tracking.tracker.Tracker implements it)."""

    def production_digest(self) -> str | None: ...


def check_active_mask(config: RunConfig, registry: ProductionRegistry | None = None) -> list[str]:
    """What is wrong with the run's active mask; empty when the invariant holds.

    Args:
        config: The run (its run directory and codebook size).
        registry: When given, the `production` version must hold the active mask too (once anything
            was promoted).
    """
    paths = run_paths(config)
    active = read_active(paths) or Mask(config.bottleneck.n_codes)
    problems = []
    n_codes = config.bottleneck.n_codes
    if active.n_codes != n_codes:
        problems.append(f"the active mask is over {active.n_codes} codes, the run's codebook has {n_codes}")
    problems += _request_problems(paths.store_dir, active)
    problems += _topic_problems(paths, active)
    if registry is not None:
        problems += _production_problems(registry, active)
    return problems


def _production_problems(registry: ProductionRegistry, active: Mask) -> list[str]:
    production = registry.production_digest()
    answered = any(s.name.startswith(REQUEST_PREFIX) for s in active.sources)
    if production is None and not answered:  # an untracked run (`codeunlearn run`) promotes nothing
        return []
    if production != active.digest:
        return [f"production holds mask {str(production)[:12]}, the active mask is {active.digest[:12]}"]
    return []


def _request_problems(store_root: Path, active: Mask) -> list[str]:
    requests = RequestStore(store_root)
    in_mask = {s.name: s.code_ids for s in active.sources if s.name.startswith(REQUEST_PREFIX)}
    done = {r.request_id: r for r in requests.list(("done",))}
    # a revert under way (or killed mid-way) may or may not have taken the codes out yet
    reverting = {r.request_id for r in requests.list(("reverting",))}
    problems = [
        f"request {rid} is done but its codes are not in the active mask" for rid in done.keys() - in_mask
    ]
    for request_id, codes in in_mask.items():
        if request_id in reverting:
            continue
        if request_id not in done:
            status = _status(requests, request_id)
            problems.append(f"request {request_id} is {status}, but its codes are in the active mask")
            continue
        recorded = _recorded_codes(requests.store, done[request_id])
        if recorded != codes:
            problems.append(
                f"request {request_id}: the active mask holds {len(codes)} codes for it, mask version "
                f"{done[request_id].mask_version} recorded {len(recorded)} others"
            )
    return problems


def _topic_problems(paths: RunPaths, active: Mask) -> list[str]:
    activated = set()  # (topic, its codes) of every pipeline activation
    for entry in read_journal(paths):
        kind, _, name = entry["action"].partition(":")
        if kind == "pipeline":
            activated.add((name, tuple(entry["sources"].get(name, ()))))
    return [
        f"topic {source.name} is in the active mask, but the pipeline never activated it with these codes"
        for source in active.sources
        if not source.name.startswith(REQUEST_PREFIX) and (source.name, source.code_ids) not in activated
    ]


def _status(requests: RequestStore, request_id: str) -> str:
    found = requests.list()
    return next((r.status for r in found if r.request_id == request_id), "unknown to the store")


def _recorded_codes(store: CodeStore, request: DeletionRequest) -> tuple[int, ...]:
    rows = store.sql(
        "SELECT DISTINCT code_id FROM mask_codes WHERE mask_version = $v AND source = $s ORDER BY code_id",
        {"v": request.mask_version, "s": request.request_id},
    )
    return tuple(rows.column("code_id").to_pylist())
