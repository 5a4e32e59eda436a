"""Deletions across a retrained codebook: code ids mean something only over the codebook they were mined
on, so when the tracked pipeline registers a codebook version with other weights, every request
answered (or waiting) on an earlier codebook is submitted again, with the same topic, against the new
version; the old one becomes `superseded`, its `error` naming the request that carries it.

Until the carried requests are processed, `production` keeps the previous codebook's masked version,
which still forgets them: nothing is promoted while a carried request is open.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from codeunlearn.core.config import RunConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.paths import run_paths
from codeunlearn.requests.queue import DeletionRequest, RequestStore
from codeunlearn.requests.registry import Registry

log = logging.getLogger(__name__)

SUPERSEDED = "superseded"
# answered, or still to answer, on the old codebook (a revert under way is not carried: it undoes one)
CARRIED_STATUSES = ("done", "pending", "processing")
_CARRIED_TO = re.compile(r"^carried to (req-[0-9a-f]+)")


@dataclass(frozen=True)
class Carried:
    """One request carried to a new codebook version."""

    old_id: str
    new_id: str
    old_status: str


def carry_requests(
    config: RunConfig, registry: Registry, version: str, wait_s: float = 600.0
) -> list[Carried]:
    """Under the processing lock, carry every done or open request of the run that targets a codebook
    version with other weights than `version`'s to `version`. Safe to repeat: the new request's id
    follows from the old one's and the new weights, so a run killed midway never submits one twice.
    """
    weights = registry.codebook_tags(version).get("weights_sha256", "")
    requests = RequestStore(run_paths(config).store_dir)
    known: dict[str, str] = {version: weights}
    carried = []
    with requests.exclusive(wait_s):
        existing = {r.request_id for r in requests.list()}
        for request in requests.list(CARRIED_STATUSES):
            if request.model_version not in known:
                known[request.model_version] = _weights_of(registry, request.model_version)
            over = known[request.model_version]
            if not weights or not over or over == weights:  # unknown weights: nothing to compare
                continue
            new_id = "req-" + hashlib.sha256(f"{request.request_id}:{weights}".encode()).hexdigest()[:12]
            if new_id not in existing:  # first the new request: a crash between never loses the deletion
                requests.mark(
                    DeletionRequest(
                        request_id=new_id,
                        topic_kind=request.topic_kind,
                        topic_spec=request.topic_spec,
                        topic_hash=request.topic_hash,
                        model_name=registry.codebook_name,
                        model_version=str(version),
                        submitted_at=datetime.now(UTC),
                    ),
                    "pending",
                    error=f"carried from {request.request_id} (codebook version {request.model_version})",
                )
            requests.mark(
                request,
                SUPERSEDED,
                error=f"carried to {new_id} (codebook version {version}, retrained; was {request.status})",
            )
            carried.append(Carried(request.request_id, new_id, request.status))
    if carried:
        log.warning(
            "codebook version %s has new weights: %d deletion request(s) carried to it (%s); production "
            "keeps the previous codebook's mask until they are processed (`codeunlearn request process`)",
            version,
            len(carried),
            ", ".join(f"{c.old_id} -> {c.new_id}" for c in carried),
        )
    return carried


def open_carried(requests: RequestStore) -> list[DeletionRequest]:
    """The carried requests still waiting to be processed."""
    targets = {m.group(1) for r in requests.list((SUPERSEDED,)) if (m := _CARRIED_TO.match(r.error))}
    return [r for r in requests.open_requests() if r.request_id in targets]


def promote_unless_carrying(registry: Registry, store_root: Path, version: str, besides: str = "") -> bool:
    """Promote `version` unless a carried request (other than `besides`, the one being answered) is
    still open: until then production's version of the previous codebook is the one that forgets it.
    Returns whether it promoted."""
    waiting = [r.request_id for r in open_carried(RequestStore(store_root)) if r.request_id != besides]
    if waiting:
        log.info(
            "mask version %s is active but not promoted: production keeps the previous codebook's mask, "
            "which still forgets carried request(s) %s, until they are processed",
            version,
            ", ".join(waiting),
        )
        return False
    registry.promote(version)
    return True


def _weights_of(registry: Registry, version: str) -> str:
    try:
        return registry.codebook_tags(version).get("weights_sha256", "")
    except CodeunlearnError:  # a version no longer in the registry: its weights are unknown
        return ""
