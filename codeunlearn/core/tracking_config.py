"""Config section for where the tracked state lives: MLflow runs, registered models, requests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from codeunlearn.core.config_fields import setting


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
    enabled: bool = setting(True, "false runs the flows without MLflow (no registry, no promotion)")

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{(Path(self.state_dir) / 'mlflow.db').resolve()}"

    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str((Path(self.state_dir) / "mlartifacts").resolve())
