"""The deletion-request flow: answer every pending request, once each, under the processing lock.

python -m flows.deletion_requests configs/default.yaml [section.key=value ...]
"""

from __future__ import annotations

import sys

from prefect import flow

from codeunlearn.core.announcement import announced_config
from tasks.deletion_requests import process_request


@flow(name="process-deletion-requests")
def process_deletion_requests(
    config_path: str = "configs/default.yaml",
    overrides: list[str] | str | None = None,
    wait_s: float = 600.0,
    request_id: str | None = None,
    config_digest: str = "",
) -> list[dict]:
    """Take the pending requests (and any a killed run left processing) and process each once.

    The "request added" event trigger sets `overrides` (a JSON list), `config_digest` (the flow
    refuses a config that is not the one the request was checked with) and `request_id`, which is
    informational: every open request is processed, in submission order, so none waits for the next
    schedule.
    """
    from codeunlearn.requests.service import (
        process_open_requests,  # heavy (torch): imported when the flow runs
    )
    from codeunlearn.tracking.tracker import Tracker

    config = announced_config(config_path, overrides, config_digest)
    processed = process_open_requests(config, Tracker(config), wait_s, each=process_request)
    return [
        {"request_id": r.request_id, "status": r.status, "mask_version": r.mask_version} for r in processed
    ]


if __name__ == "__main__":
    process_deletion_requests(*sys.argv[1:2], overrides=sys.argv[2:])
