"""The entry points of deletion-request processing: every open request, or one revert, under the run
directory's processing lock (codeunlearn.requests.processor does the work)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from codeunlearn.core.config import RunConfig
from codeunlearn.requests.processor import Processor
from codeunlearn.requests.queue import DeletionRequest
from codeunlearn.requests.registry import Registry

log = logging.getLogger(__name__)


def process_open_requests(
    config: RunConfig,
    registry: Registry,
    wait_s: float = 600.0,
    each: Callable[[Processor, str], object] | None = None,
) -> list[DeletionRequest]:
    """Under the processing lock, answer every pending request (and any a dead run left processing),
    in submission order, inside one tracking run; `each(processor, request_id)` (a Prefect task, say)
    replaces the plain call per request. Nothing is tracked when nothing is pending."""
    processor = Processor(config, registry)
    with processor.requests.exclusive(wait_s):
        registry.close_abandoned_runs()  # the runs of a processor killed while it held this lock
        due = processor.requests.due_requests()
        waiting = len(processor.requests.open_requests()) - len(due)
        if waiting:
            log.info("%d request(s) wait for their retry time (requests.retry_backoff_s)", waiting)
        open_ids = [r.request_id for r in due]
        if not open_ids:
            return []
        with registry.run("process-deletion-requests", locked=True) as parent:
            processor.parent_run_id = parent
            for request_id in open_ids:
                (each or Processor.process)(processor, request_id)
        return [processor.requests.get(request_id) for request_id in open_ids]


def revert_request(
    config: RunConfig, registry: Registry, request_id: str, wait_s: float = 600.0
) -> DeletionRequest:
    """Under the processing lock, take a done request's codes out of the active mask (or finish the
    revert a killed run began)."""
    processor = Processor(config, registry)
    with processor.requests.exclusive(wait_s):
        registry.close_abandoned_runs()
        return processor.revert(request_id)
