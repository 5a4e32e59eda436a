"""Thin Prefect tasks over the library's stages (codeunlearn.pipeline). No logic lives here."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from codeunlearn import pipeline
from codeunlearn.config import RunConfig


@task(cache_policy=INPUTS + TASK_SOURCE)
def prepare_data(config: RunConfig) -> dict:
    """Corpus partition and topic splits; returns the manifest (counts and hashes, no text)."""
    return pipeline.prepare(config).manifest


@task(cache_policy=INPUTS + TASK_SOURCE, tags=["gpu"])
def train_codebook(config: RunConfig) -> dict:
    result = pipeline.train_codebook(config)
    return {"steps": result.steps, "final_loss": result.final_loss, "elapsed_s": result.elapsed_s}


@task(tags=["gpu"])
def mine_codes(config: RunConfig) -> list[int]:
    return pipeline.mine(config).code_ids.tolist()


@task
def unlearn(config: RunConfig) -> str:
    return pipeline.unlearn(config).digest


@task(tags=["gpu"])
def evaluate(config: RunConfig) -> dict:
    return pipeline.evaluate(config).nll
