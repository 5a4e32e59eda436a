"""Thin Prefect tasks over the tracked stages (codeunlearn.tracking.stages) and request processing.

Expensive stages cache on their inputs (the config and `fingerprint`: the corpus's and the library
code's fingerprint, codeunlearn.core.fingerprint) and on this file's source, not on the MLflow parent
run, so a rerun after a failure skips what finished, and an edited corpus or new code runs again. Their
results live in the run directory (`results_in_run_dir`), so deleting a run directory also forgets its
cache. Stages that use the accelerator hold one slot of the `gpu` global concurrency limit (create it
with `prefect gcl create gpu --limit 1`; without it they run unthrottled).

The library is imported inside each task: `prefect deploy` imports this module to read the flows'
parameters, and should not pay for (or race on) importing torch.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from prefect import Task, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.concurrency.sync import concurrency

from codeunlearn.core.config import RunConfig

CACHE_ON_CONFIG = (INPUTS - "parent_run_id") + TASK_SOURCE


@contextmanager
def gpu_slot():
    with concurrency("gpu", occupy=1, strict=False):
        yield


def results_in_run_dir(stage: Task, config: RunConfig) -> Task:
    """The task with its cached results stored under `<run_dir>/.prefect-results`."""
    return stage.with_options(result_storage=(Path(config.run_dir) / ".prefect-results").resolve())


@task(cache_policy=CACHE_ON_CONFIG, persist_result=True)
def prepare_data(config: RunConfig, parent_run_id: str, fingerprint: str = "") -> dict:
    """Corpus partition and topic splits; returns the public manifest (counts and hashes, no text)."""
    from codeunlearn.tracking import stages as tracked

    return tracked.prepare(config, parent_run_id)


@task(cache_policy=CACHE_ON_CONFIG, persist_result=True, tags=["gpu"])
def train_codebook(config: RunConfig, parent_run_id: str, fingerprint: str = "") -> str:
    """Train (or reuse) and register the codebook model; returns its registered version."""
    from codeunlearn.tracking import stages as tracked

    with gpu_slot():
        return tracked.train(config, parent_run_id)


@task(cache_policy=CACHE_ON_CONFIG, persist_result=True, tags=["gpu"])
def mine_codes(config: RunConfig, parent_run_id: str, fingerprint: str = "") -> dict:
    """Code counts into the store and the selected codes; returns the code-statistics summary."""
    from codeunlearn.tracking import stages as tracked

    with gpu_slot():
        return tracked.mine(config, parent_run_id)


@task
def unlearn(config: RunConfig, parent_run_id: str, codebook_version: str) -> str:
    """Mask the mined codes; returns the registered masked-model version."""
    from codeunlearn.tracking import stages as tracked

    return tracked.unlearn(config, parent_run_id, codebook_version)


@task(tags=["gpu"])
def evaluate(config: RunConfig, parent_run_id: str, mask_version: str, codebook_version: str) -> dict:
    """Evaluate the mask version and promote it to production if it clears the gates."""
    from codeunlearn.tracking import stages as tracked

    with gpu_slot():
        return tracked.evaluate(config, parent_run_id, mask_version, codebook_version)
