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
