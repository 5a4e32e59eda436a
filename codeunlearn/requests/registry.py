"""What deletion needs from a model registry (codeunlearn.tracking.tracker.Tracker implements it)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from codeunlearn.requests.queue import DeletionRequest
from codeunlearn.unlearning.masks import Mask


class Registry(Protocol):
    """What deletion needs from a model registry (codeunlearn.tracking.tracker.Tracker implements it)."""

    codebook_name: str

    def latest_codebook_version(self) -> str: ...

    def codebook_tags(self, version: str) -> dict[str, str]: ...

    def find_mask_version(self, digest: str | None, request_key: str) -> str | None: ...

    def register_mask(
        self, mask: Mask, codebook_version: str, request_key: str, tags: dict[str, str], run_id: str
    ) -> str: ...

    def promote(self, version: str) -> None: ...

    def start_request_run(self, request: DeletionRequest, action: str, parent_run_id: str | None) -> str: ...

    def run(self, name: str, locked: bool = False) -> AbstractContextManager[str]: ...

    def close_abandoned_runs(self) -> list[str]: ...

    def log_dict(self, run_id: str, payload: dict, artifact_file: str) -> None: ...

    def log_params(self, run_id: str, params: dict[str, str]) -> None: ...

    def finish_run(self, run_id: str, metrics: dict[str, float], status: str) -> None: ...
