"""The end-to-end pipeline flow: prepare -> train -> mine -> unlearn -> evaluate, every stage an MLflow
run nested under one pipeline run.

    python -m flows.pipeline configs/default.yaml [section.key=value ...]
"""

from __future__ import annotations

import sys

from prefect import flow

from codeunlearn.core.config import load_config
from tasks import stages
from tasks.stages import results_in_run_dir


@flow(name="codeunlearn-pipeline")
def pipeline_flow(config_path: str = "configs/default.yaml", overrides: list[str] | None = None) -> dict:
    """Train the codebook once, forget the config's topic, evaluate, and promote if the gates pass."""
    from codeunlearn.tracking import stages as tracked

    config = load_config(config_path, overrides or [])
    with tracked.pipeline_run(config) as parent:
        manifest = results_in_run_dir(stages.prepare_data, config)(config, parent)
        codebook_version = results_in_run_dir(stages.train_codebook, config)(config, parent)
        codes = results_in_run_dir(stages.mine_codes, config)(config, parent)
        mask_version = stages.unlearn(config, parent, codebook_version)
        evaluation = stages.evaluate(config, parent, mask_version, codebook_version)
    return {
        "mlflow_run_id": parent,
        "codebook_version": codebook_version,
        "mask_version": mask_version,
        "n_examples": {name: entry["count"] for name, entry in manifest["splits"].items()},
        "n_selected": codes["n_selected"],
        **evaluation,
    }


@flow(name="codeunlearn-train")
def train_flow(config_path: str = "configs/default.yaml", overrides: list[str] | None = None) -> str:
    """Prepare the data and train and register the codebook model; returns its version."""
    from codeunlearn.tracking import stages as tracked

    config = load_config(config_path, overrides or [])
    with tracked.pipeline_run(config) as parent:
        results_in_run_dir(stages.prepare_data, config)(config, parent)
        return results_in_run_dir(stages.train_codebook, config)(config, parent)


@flow(name="codeunlearn-unlearn")
def unlearn_flow(config_path: str = "configs/default.yaml", overrides: list[str] | None = None) -> dict:
    """Forget the config's topic on the trained codebook model: mine, mask, evaluate, gate."""
    from codeunlearn.tracking import stages as tracked

    config = load_config(config_path, overrides or [])
    with tracked.pipeline_run(config) as parent:
        results_in_run_dir(stages.prepare_data, config)(config, parent)
        codebook_version = results_in_run_dir(stages.train_codebook, config)(config, parent)
        results_in_run_dir(stages.mine_codes, config)(config, parent)
        mask_version = stages.unlearn(config, parent, codebook_version)
        return stages.evaluate(config, parent, mask_version, codebook_version)


if __name__ == "__main__":
    pipeline_flow(*sys.argv[1:2], overrides=sys.argv[2:])
