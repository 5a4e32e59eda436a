"""Config section for where the tracked state lives: MLflow runs, registered models, requests."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from codeunlearn.core.config_fields import setting
from codeunlearn.core.errors import ConfigError
from codeunlearn.core.redaction import redact_uri


@dataclass(frozen=True)
class TrackingConfig:
    """Where MLflow runs, registered models and deletion requests live.

    Empty strings take defaults under `state_dir`, so one directory holds the whole tracked state.
    """

    state_dir: str = setting("state", "directory of the whole tracked state")
    tracking_uri: str = setting("", "MLflow tracking URI; '' is sqlite:///<state_dir>/mlflow.db")
    artifact_root: str = setting("", "MLflow artifact root; '' is <state_dir>/mlartifacts")
    experiment: str = setting("", "MLflow experiment; '' is codeunlearn-<model>, one per base model")
    model_name: str = setting(
        "", "registered-model prefix; '' is the model name made registry-safe and the run_dir's id"
    )

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{(Path(self.state_dir) / 'mlflow.db').resolve()}"

    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str((Path(self.state_dir) / "mlartifacts").resolve())

    def validate(self) -> None:
        """Raises ConfigError for a tracking URI or artifact root that cannot be a URI or a path: one
        holding whitespace or control characters (URIs are shown redacted in the message)."""
        for name in ("tracking_uri", "artifact_root"):
            value = getattr(self, name)
            if re.search(r"[\s\x00-\x1f]", value):
                raise ConfigError(
                    f"tracking.{name}={redact_uri(value)!r} is not a URI (it holds whitespace): give one "
                    "such as sqlite:///state/mlflow.db or http://127.0.0.1:5000, or '' for the default "
                    "under tracking.state_dir (percent-encode a space as %20)"
                )

    def redacted(self) -> TrackingConfig:
        """This section with the credentials of its tracking URI and artifact root replaced by `***`."""
        return dataclasses.replace(
            self, tracking_uri=redact_uri(self.tracking_uri), artifact_root=redact_uri(self.artifact_root)
        )


@dataclass(frozen=True)
class RequestsConfig:
    """How deletion requests are retried: an attempt that ends in an error other than bad input (a
    full disk, a registry outage, a killed process) leaves the request pending for a later run, which
    waits `retry_backoff_s` after the first failure, twice that after the second, and so on."""

    max_attempts: int = setting(3, "attempts a request gets before it is marked failed")
    retry_backoff_s: float = setting(60.0, "seconds before the first retry; each next wait doubles")

    def validate(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"requests.max_attempts={self.max_attempts}: set it to 1 or more, e.g. 3")
        if not 0 <= self.retry_backoff_s <= 86400:
            raise ConfigError(
                f"requests.retry_backoff_s={self.retry_backoff_s}: give seconds from 0 to 86400, e.g. 60"
            )

    def backoff_s(self, attempts: int) -> float:
        """The wait before the next attempt of a request whose attempt number `attempts` failed."""
        return self.retry_backoff_s * 2 ** max(attempts - 1, 0)
