"""What the "request added" event carries so that the flow it triggers runs on the very config the
request was checked with: the config file, the overrides (with the run directory and tracking state
made absolute, since the worker resolves paths from its own directory), and the digest of the
effective config, which the flow recomputes and must match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from codeunlearn.core.config_io import config_to_dict, load_config
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.redaction import redact_uri
from codeunlearn.core.run_config import RunConfig


@dataclass(frozen=True)
class Announcement:
    """The event resource's config fields (all strings, as Prefect event resources require)."""

    config_path: str
    overrides: str  # JSON list of section.key=value
    config_digest: str

    def resource(self) -> dict[str, str]:
        return {
            "config_path": self.config_path,
            "overrides": self.overrides,
            "config_digest": self.config_digest,
        }


def config_digest(config: RunConfig) -> str:
    """sha256 of the effective config, every setting included."""
    return hashlib.sha256(
        json.dumps(config_to_dict(config), sort_keys=True, default=str).encode()
    ).hexdigest()


def announce(config_path: Path | None, overrides: Sequence[str]) -> Announcement:
    """The announcement of a config: its file made absolute, its overrides plus absolute run_dir and
    tracking.state_dir, and the digest of what they give.

    Raises:
        CodeunlearnError: an override carries credentials (an event is readable by whoever reads the
            Prefect server's events): pass them through the environment instead.
    """
    secret = [
        o.partition("=")[0] for o in overrides if redact_uri(o.partition("=")[2]) != o.partition("=")[2]
    ]
    if secret:
        raise CodeunlearnError(
            f"the override of {secret[0]} holds credentials, and the event would carry them: "
            "give them through MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD instead"
        )
    path = str(Path(config_path).resolve()) if config_path else ""
    config = load_config(path or None, overrides)
    pinned = [
        *overrides,
        f"run_dir={Path(config.run_dir).resolve()}",
        f"tracking.state_dir={Path(config.tracking.state_dir).resolve()}",
    ]
    return Announcement(path, json.dumps(pinned), config_digest(load_config(path or None, pinned)))


def announced_config(config_path: str, overrides: Sequence[str] | str | None, digest: str = "") -> RunConfig:
    """The config an announcement names, checked against its digest (none given: not checked).

    Raises:
        CodeunlearnError: the config differs from the one the request was checked with (its file was
            edited, or the worker runs another version of codeunlearn).
    """
    listed = json.loads(overrides) if isinstance(overrides, str) else list(overrides or [])
    config = load_config(config_path or None, listed)
    if digest and config_digest(config) != digest:
        raise CodeunlearnError(
            f"the config {config_path or '(defaults)'} with overrides {listed} is not the one the request "
            "was checked with (the file changed since): process it with `codeunlearn request process -c "
            "FILE`, or let the scheduled run take it"
        )
    return config
