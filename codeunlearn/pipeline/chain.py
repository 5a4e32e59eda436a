"""The stage chain, declared once: prepare -> train -> mine -> unlearn -> evaluate.

`run_chain` walks the chain over any executor that implements the five stages: `LocalStages` runs
the library stages in this process (`codeunlearn run`); the tracked stages (`codeunlearn pipeline`)
and the Prefect flows implement the same five names, so all three run the same chain in the same order.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from codeunlearn.core.config import RunConfig
from codeunlearn.core.paths import run_paths
from codeunlearn.evaluation.evaluator import EvalReport
from codeunlearn.model.loading import load_model
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.pipeline import baseline_stage, stages
from codeunlearn.pipeline.evaluate import evaluate
from codeunlearn.training.stamp import trained_model_matches

log = logging.getLogger(__name__)

STAGES = ("prepare", "train", "mine", "unlearn", "evaluate")


class StageExecutor(Protocol):
    """One way of running the stages; each method runs one stage and returns its result."""

    def prepare(self) -> Any: ...

    def train(self) -> Any: ...

    def mine(self) -> Any: ...

    def unlearn(self) -> Any: ...

    def evaluate(self) -> Any: ...


def run_chain(executor: StageExecutor, through: str = "evaluate") -> dict[str, Any]:
    """Run the stages in order up to and including `through`; returns each stage's result by name."""
    if through not in STAGES:
        raise ValueError(f"no stage {through!r}: the stages are {', '.join(STAGES)}")
    results: dict[str, Any] = {}
    for name in STAGES[: STAGES.index(through) + 1]:
        log.info("stage %s", name)
        results[name] = getattr(executor, name)()
    return results


class LocalStages:
    """The library stages in this process. A model already trained with the same settings is reused;
    with a gradient `unlearn.method`, that baseline edits a copy of the codebook model in place of
    mining and masking."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self._codebook_model: CodebookModel | None = None

    @property
    def codebook_model(self) -> CodebookModel:
        if self._codebook_model is None:
            self._codebook_model = load_model(self.config)
        return self._codebook_model

    def prepare(self) -> Any:
        return stages.prepare(self.config)

    def train(self) -> Any:
        if trained_model_matches(self.config):
            log.info("reusing the trained codebook model in %s", run_paths(self.config).model_dir)
            stages.follow_codebook(self.config)
            return None
        return stages.train_codebook(self.config)

    def mine(self) -> Any:
        if self.config.unlearn.uses_gradients:
            return None  # a gradient baseline needs no codes
        return stages.mine(self.config, self.codebook_model)

    def unlearn(self) -> Any:
        if self.config.unlearn.uses_gradients:
            return baseline_stage.unlearn_with_baseline(self.config)
        return stages.unlearn(self.config, self.codebook_model.bottleneck.n_codes)

    def evaluate(self) -> EvalReport:
        if self.config.unlearn.uses_gradients:
            return evaluate(self.config)
        return evaluate(self.config, self.codebook_model)


def run_all(config: RunConfig) -> EvalReport:
    """Every stage in this process (`codeunlearn run`); returns the evaluation."""
    return run_chain(LocalStages(config))["evaluate"]
