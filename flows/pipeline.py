"""The pipeline flows: the stage chain (codeunlearn.pipeline.chain) with every stage a Prefect task
and an MLflow run nested under one pipeline run.

    python -m flows.pipeline configs/default.yaml [section.key=value ...]
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow

from codeunlearn.core.config import RunConfig, load_config
from codeunlearn.core.fingerprint import stage_fingerprint
from tasks import stages
from tasks.stages import results_in_run_dir


class PrefectStages:
    """The five stages as Prefect tasks over the tracked stages; the expensive ones cache their results
    in the run directory. The codebook and mask versions are handed down the chain."""

    def __init__(self, config: RunConfig, parent_run_id: str) -> None:
        self.config = config
        self.parent_run_id = parent_run_id
        self.codebook_version = ""
        self.mask_version = ""
        self.fingerprint = stage_fingerprint(config.data)  # part of the cached tasks' keys

    def prepare(self) -> dict:
        return results_in_run_dir(stages.prepare_data, self.config)(
            self.config, self.parent_run_id, self.fingerprint
        )

    def train(self) -> str:
        train = results_in_run_dir(stages.train_codebook, self.config)
        self.codebook_version = train(self.config, self.parent_run_id, self.fingerprint)
        return self.codebook_version

    def mine(self) -> dict:
        return results_in_run_dir(stages.mine_codes, self.config)(
            self.config, self.parent_run_id, self.fingerprint
        )

    def unlearn(self) -> str:
        self.mask_version = stages.unlearn(self.config, self.parent_run_id, self.codebook_version)
        return self.mask_version

    def evaluate(self) -> dict:
        return stages.evaluate(self.config, self.parent_run_id, self.mask_version, self.codebook_version)


def _run_chain(config_path: str, overrides: list[str] | None, through: str) -> tuple[PrefectStages, dict]:
    # the library is imported here, not at module level: `prefect deploy` imports this file
    from codeunlearn.pipeline.chain import run_chain
    from codeunlearn.tracking import stages as tracked

    config = load_config(config_path, overrides or [])
    with tracked.pipeline_run(config) as parent:
        executor = PrefectStages(config, parent)
        results: dict[str, Any] = run_chain(executor, through)
    return executor, results


@flow(name="codeunlearn-pipeline")
def pipeline_flow(config_path: str = "configs/default.yaml", overrides: list[str] | None = None) -> dict:
    """Train the codebook once, forget the config's topic, evaluate, and promote if the gates pass."""
    executor, results = _run_chain(config_path, overrides, "evaluate")
    return {
        "mlflow_run_id": executor.parent_run_id,
        "codebook_version": executor.codebook_version,
        "mask_version": executor.mask_version,
        "n_examples": {name: entry["count"] for name, entry in results["prepare"]["splits"].items()},
        "n_selected": results["mine"]["n_selected"],
        **results["evaluate"],
    }


@flow(name="codeunlearn-train")
def train_flow(config_path: str = "configs/default.yaml", overrides: list[str] | None = None) -> str:
    """Prepare the data and train and register the codebook model; returns its version."""
    executor, _ = _run_chain(config_path, overrides, "train")
    return executor.codebook_version


@flow(name="codeunlearn-unlearn")
def unlearn_flow(config_path: str = "configs/default.yaml", overrides: list[str] | None = None) -> dict:
    """Forget the config's topic on the trained codebook model: mine, mask, evaluate, gate."""
    _, results = _run_chain(config_path, overrides, "evaluate")
    return results["evaluate"]


if __name__ == "__main__":
    pipeline_flow(*sys.argv[1:2], overrides=sys.argv[2:])
