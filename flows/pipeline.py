"""The end-to-end pipeline as a Prefect flow: prepare -> train -> mine -> unlearn -> evaluate.

Run it with `python -m flows.pipeline configs/default.yaml` (needs `pip install -e ".[pipeline]"`).
"""

from __future__ import annotations

import sys

from prefect import flow

from codeunlearn.config import load_config
from tasks import stages


@flow(name="codeunlearn-pipeline")
def pipeline_flow(config_path: str = "configs/default.yaml", overrides: list[str] | None = None) -> dict:
    config = load_config(config_path, overrides or [])
    stages.prepare_data(config)
    stages.train_codebook(config)
    stages.mine_codes(config)
    mask_digest = stages.unlearn(config)
    return {"mask": mask_digest, "nll": stages.evaluate(config)}


if __name__ == "__main__":
    pipeline_flow(*sys.argv[1:2], overrides=sys.argv[2:])
