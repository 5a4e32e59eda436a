"""A run directory's layout, and the process settings every stage applies before it touches it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from codeunlearn.core.config import RunConfig


@dataclass(frozen=True)
class RunPaths:
    """Where each stage keeps its outputs inside the run directory."""

    root: Path

    @property
    def corpus_dir(self) -> Path:
        return self.root / "data" / "corpus"

    @property
    def splits_dir(self) -> Path:
        return self.root / "data" / "topic"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def store_dir(self) -> Path:
        return self.root / "store"

    @property
    def lock_file(self) -> Path:
        """The run's processing lock: whoever writes the active mask or answers requests holds it."""
        return self.store_dir / "requests.lock"

    @property
    def selection_file(self) -> Path:
        return self.root / "mining" / "selected.json"

    @property
    def masks_dir(self) -> Path:
        return self.root / "masks"

    @property
    def active_mask(self) -> Path:
        return self.masks_dir / "active.json"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def unlearned_dir(self) -> Path:
        """Models a gradient baseline edited (`unlearned/<method>/`), kept beside the mask."""
        return self.root / "unlearned"


def run_paths(config: RunConfig) -> RunPaths:
    """The paths of the config's run directory (no side effects)."""
    return RunPaths(Path(config.run_dir))


def open_run(config: RunConfig) -> RunPaths:
    """Apply the process-wide settings (offline mode, threads) and return the run's paths."""
    set_offline(config.offline)
    if config.model.threads:
        torch.set_num_threads(config.model.threads)
    return run_paths(config)


def set_offline(offline: bool) -> None:
    """Keep transformers and datasets off the hub; a failed hub lookup otherwise costs 24-50 s."""
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
