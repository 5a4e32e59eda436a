"""Thin Prefect tasks over deletion-request processing (codeunlearn.requests.processor)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.stages import gpu_slot

if TYPE_CHECKING:
    from codeunlearn.requests.processor import Processor


@task(tags=["gpu"], cache_policy=NO_CACHE)
def process_request(processor: Processor, request_id: str) -> dict:
    """Mine, mask, evaluate, register and (if the gates pass) promote one request; returns its record."""
    with gpu_slot():
        request = processor.process(request_id)
    return {
        "request_id": request.request_id,
        "status": request.status,
        "mask_version": request.mask_version,
        "error": request.error,
    }
