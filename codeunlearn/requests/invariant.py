"""The invariant of a run directory's active mask: over the run's codebook (its weights, not only its
size), it is exactly the union of the codes of the `done` deletion requests and of the topics the
pipeline activated (each recorded in the mask's journal) of the current lineage, i.e. since the codebook
was last retrained. `codeunlearn doctor` prints what breaks it.

After a retrain, requests answered on the old codebook are carried to the new one (requests.lineage);
until they are processed, production keeps the old codebook's masked version. That state is explained
(`Diagnosis.notes`), not reported as broken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from codeunlearn.core.config import RunConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.paths import RunPaths, run_paths
from codeunlearn.requests.lineage import open_carried
from codeunlearn.requests.queue import DeletionRequest, RequestStore
from codeunlearn.store.code_store import CodeStore
from codeunlearn.unlearning.active_mask import RETRAIN, lineage_journal, read_active, read_journal
from codeunlearn.unlearning.masks import Mask

REQUEST_PREFIX = "req-"


class ProductionRegistry(Protocol):
    """What the check reads from a model registry (codeunlearn.tracking.tracker.Tracker implements it)."""

    def production_digest(self) -> str | None: ...


@dataclass
class Diagnosis:
    """What breaks the invariant (`problems`), and what is in a known transitional state (`notes`)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_active_mask(config: RunConfig, registry: ProductionRegistry | None = None) -> list[str]:
    """What is wrong with the run's active mask; empty when the invariant holds (see `diagnose`)."""
    return diagnose(config, registry).problems


def diagnose(config: RunConfig, registry: ProductionRegistry | None = None) -> Diagnosis:
    """Check the run's active mask.

    Args:
        config: The run (its run directory and codebook size).
        registry: When given, the `production` version must hold the active mask too (once anything
            was promoted), or, while requests carried to a retrained codebook are open, the mask of
            the codebook before.
    """
    paths = run_paths(config)
    try:
        active = read_active(paths) or Mask(config.bottleneck.n_codes)
    except CodeunlearnError as error:  # over other weights than the run's codebook
        return Diagnosis([str(error)])
    found = Diagnosis()
    n_codes = config.bottleneck.n_codes
    if active.n_codes != n_codes:
        found.problems.append(
            f"the active mask is over {active.n_codes} codes, the run's codebook has {n_codes}"
        )
    requests = RequestStore(paths.store_dir)
    carrying = [r.request_id for r in open_carried(requests)]
    if carrying:
        found.notes.append(
            f"the codebook was retrained: request(s) {', '.join(carrying)} carry deletions answered on the "
            "previous codebook; process them with `codeunlearn request process`"
        )
    earlier = _earlier_lineage_requests(paths)
    found.problems += _request_problems(requests, active, earlier, found.notes)
    found.problems += _topic_problems(paths, active)
    if registry is not None:
        found.problems += _production_problems(
            registry, active, paths, carrying + sorted(earlier), found.notes
        )
    return found


def _earlier_lineage_requests(paths: RunPaths) -> set[str]:
    """Requests activated only before the codebook was last retrained."""
    current = lineage_journal(paths)
    names = {e["action"].partition(":")[2] for e in current if e["action"].startswith("request:")}
    return {
        name
        for e in read_journal(paths)
        if e["action"].startswith("request:") and (name := e["action"].partition(":")[2]) not in names
    }


def _production_problems(
    registry: ProductionRegistry, active: Mask, paths: RunPaths, waiting: list[str], notes: list[str]
) -> list[str]:
    production = registry.production_digest()
    answered = any(s.name.startswith(REQUEST_PREFIX) for s in active.sources)
    if production is None and not answered:  # an untracked run (`codeunlearn run`) promotes nothing
        return []
    if production == active.digest:
        return []
    previous = {
        e.get("previous_digest") for e in read_journal(paths) if e["action"].startswith(f"{RETRAIN}:")
    }
    if production in previous and waiting:
        notes.append(
            f"production holds mask {str(production)[:12]} of the codebook before it was retrained, which "
            f"still forgets {', '.join(waiting)}; the new codebook's active mask {active.digest[:12]} is "
            "promoted once they are answered on it"
        )
        return []
    if production in previous:
        return [
            f"production holds mask {str(production)[:12]} of the codebook before it was retrained, the "
            f"active mask is {active.digest[:12]}, and no carried request is open: a carried request "
            "ended rejected or failed, so nothing was promoted (`codeunlearn request list --status "
            "superseded` names them; retry failed ones with `codeunlearn request retry`)"
        ]
    return [f"production holds mask {str(production)[:12]}, the active mask is {active.digest[:12]}"]


def _request_problems(requests: RequestStore, active: Mask, earlier: set[str], notes: list[str]) -> list[str]:
    in_mask = {s.name: s.code_ids for s in active.sources if s.name.startswith(REQUEST_PREFIX)}
    done = {r.request_id: r for r in requests.list(("done",))}
    # a revert under way (or killed mid-way) may or may not have taken the codes out yet
    reverting = {r.request_id for r in requests.list(("reverting",))}
    missing = sorted(done.keys() - in_mask)
    notes += [
        f"request {rid} was answered on the codebook before it was retrained: the tracked pipeline "
        "(`codeunlearn pipeline`) carries it over when it registers the new codebook"
        for rid in missing
        if rid in earlier
    ]
    problems = [
        f"request {rid} is done but its codes are not in the active mask"
        for rid in missing
        if rid not in earlier
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
    for entry in lineage_journal(paths):
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
