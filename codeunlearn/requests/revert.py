"""Taking a done request's codes back out of the active mask: replayable, and gated like a deletion.

A revert is recorded first (the request goes `done` -> `reverting`, an open status), then carried out
in steps that are each safe to repeat: the mask without the request's codes is checked (every other
done request's codes still in it) and evaluated on the request's held-out test split (the served
model must still clear the retain gate), registered (found again by digest and `revert:<id>` after a
crash), activated, promoted, and the request marked `reverted`. A run killed at any step leaves the
request `reverting`, and the next processor run (or `request revert` again) finishes it.

A revert refused by its checks, or one that failed `requests.max_attempts` times before its mask was
activated, goes back to `done` with the reason in its `error`: the deletion stays in force.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.failpoints import failpoint
from codeunlearn.core.run_config import RunConfig
from codeunlearn.data.topics import Splits, read_splits
from codeunlearn.evaluation.calibrated import score_held_out, test_of
from codeunlearn.evaluation.outcome import TopicOutcome
from codeunlearn.evaluation.text_pool import TextPool
from codeunlearn.requests.lineage import promote_unless_carrying
from codeunlearn.requests.queue import DeletionRequest, RequestStore, failure_reason
from codeunlearn.requests.registry import Registry
from codeunlearn.unlearning.masks import Mask

log = logging.getLogger(__name__)


class Processor(Protocol):
    """What a revert needs of the request processor (codeunlearn.requests.processor.Processor)."""

    config: RunConfig
    registry: Registry
    requests: RequestStore
    parent_run_id: str | None

    def request_dir(self, request_id: str) -> Path: ...

    def active_mask(self) -> Mask: ...

    def pool(self, splits: Splits) -> TextPool: ...

    def record_mask(self, mask: Mask, version: str, codebook_version: str) -> None: ...

    def activate(self, mask: Mask, version: str, action: str) -> None: ...

    def close_run(self, run_id: str) -> None: ...


class RevertRefused(CodeunlearnError):
    """The mask without the request fails its checks: the request stays done."""


def begin_revert(processor: Processor, request_id: str) -> DeletionRequest:
    """Record that `request_id` is to be reverted (idempotent for a revert already begun)."""
    request = processor.requests.get(request_id)
    if request.status == "reverting":
        return request
    if request.status != "done":
        raise CodeunlearnError(
            f"request {request_id} is {request.status}; only done requests can be reverted"
            + (" (it was never applied)" if request.status in ("rejected", "failed") else "")
        )
    if request_id not in _source_names(processor.active_mask()):
        raise CodeunlearnError(
            f"request {request_id} has no codes in the active mask {processor.active_mask().digest[:12]}: "
            "run `codeunlearn doctor` to see what holds the active mask"
        )
    return processor.requests.mark(request, "reverting", attempts=0, error="", not_before=None)


def revert_attempt(processor: Processor, request: DeletionRequest) -> DeletionRequest:
    """One attempt at a `reverting` request; any error ends this attempt only (see the module doc)."""
    request = processor.requests.mark(request, "reverting", attempts=request.attempts + 1)
    failpoint("revert-after-claim")
    run_id = None
    try:
        run_id = processor.registry.start_request_run(request, "revert", processor.parent_run_id)
        mask, version = _revert(processor, request, run_id)
        failpoint("revert-after-promote")
        processor.registry.finish_run(run_id, {"n_codes": float(len(mask.code_ids))}, "FINISHED")
    except Exception as error:  # one revert's failure must not stop the queue
        if run_id is not None:
            processor.close_run(run_id)
        return _end_attempt(processor, request, error)
    log.info(
        "request %s reverted: mask version %s (%d codes)", request.request_id, version, len(mask.code_ids)
    )
    return processor.requests.mark(
        request, "reverted", error="", mask_version=version, mask_digest=mask.digest
    )


def _revert(processor: Processor, request: DeletionRequest, run_id: str) -> tuple[Mask, str]:
    """Check, register, activate and promote the active mask without the request; the mask and its
    version."""
    request_id = request.request_id
    active = processor.active_mask()
    key = f"revert:{request_id}"
    if request_id not in _source_names(active):  # a killed attempt activated it already
        return _finish_applied(processor, active, key, request_id)
    mask = active.without(request_id)
    _check_others_kept(processor, mask, request_id)
    outcome = _evaluate(processor, request, mask)
    reasons = outcome.retain_failures(processor.config.gates)
    if reasons:
        raise RevertRefused("the model without its codes fails the retain gate: " + "; ".join(reasons))
    # a revert is gated on retain alone: its own topic's forgetting is what it undoes
    tags = {
        **outcome.tags(processor.config.gates),
        "gates": "passed",
        "gated_on": "retain (a revert)",
        "reverted_request": request_id,
    }
    version = processor.registry.find_mask_version(mask.digest, key) or processor.registry.register_mask(
        mask, request.model_version, key, tags, run_id
    )
    failpoint("revert-after-register")
    processor.record_mask(mask, version, request.model_version)
    processor.activate(mask, version, key)
    return mask, version


def _finish_applied(processor: Processor, active: Mask, key: str, request_id: str) -> tuple[Mask, str]:
    """Promote the revert's version if it is still the active mask's; if a later change was activated
    on top of it since, production is that change's business, and the revert is only recorded."""
    version = processor.registry.find_mask_version(active.digest, key)
    if version is not None:
        promote_unless_carrying(processor.registry, processor.requests.store.root, version, request_id)
        return active, version
    earlier = processor.registry.find_mask_version(None, key)
    if earlier is None:
        raise RevertRefused(
            f"its codes are out of the active mask {active.digest[:12]}, but no version {key} exists: "
            "run `codeunlearn doctor`"
        )
    return active, earlier


def _check_others_kept(processor: Processor, mask: Mask, request_id: str) -> None:
    """Every other done request's codes stay masked (`Mask.without` keeps shared codes)."""
    kept = set(mask.code_ids)
    for other in processor.requests.list(("done", "reverting")):
        if other.request_id == request_id:
            continue
        codes = {c for s in mask.sources if s.name == other.request_id for c in s.code_ids}
        if not codes or not codes <= kept:
            raise RevertRefused(
                f"the mask without {request_id} would not hold request {other.request_id}'s codes: "
                "run `codeunlearn doctor`"
            )


def _evaluate(processor: Processor, request: DeletionRequest, mask: Mask) -> TopicOutcome:
    """Base, codebook and `mask` NLL on the request's held-out test split, as written when it was
    answered (the split does not change if its examples file did)."""
    splits = read_splits(processor.request_dir(request.request_id) / "topic")
    pool = processor.pool(splits)
    return TopicOutcome.from_nll(score_held_out(pool, test_of(splits), mask))


def _end_attempt(processor: Processor, request: DeletionRequest, error: Exception) -> DeletionRequest:
    limit = processor.config.requests.max_attempts
    try:
        applied = request.request_id not in _source_names(processor.active_mask())
    except Exception:  # unreadable now: never undo what may have been applied; retry later
        applied = True
    reason = failure_reason(error)
    log.warning("revert of %s attempt %d failed: %s", request.request_id, request.attempts, reason)
    if isinstance(error, RevertRefused) and not applied:
        return processor.requests.mark(request, "done", error=f"revert refused: {reason}")
    if request.attempts >= limit and not applied:
        return processor.requests.mark(
            request, "done", error=f"revert gave up after {request.attempts} attempts: {reason}"
        )
    # retry later; once its mask is active the revert only has its promotion left, and is never undone
    return processor.requests.retry_later(
        request, "reverting", reason, processor.config.requests.backoff_s(request.attempts)
    )


def _source_names(mask: Mask) -> set[str]:
    return {source.name for source in mask.sources}
