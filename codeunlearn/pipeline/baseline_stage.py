"""The unlearn stage run by a gradient baseline in place of a mask, and the edited models it leaves.

With `unlearn.method` set to ga, graddiff, npo or rmu, `codeunlearn unlearn` loads the trained codebook
model, fine-tunes it on the forget subset and retain texts `codeunlearn compare` gives the baselines
(`comparison.baseline_texts`), and saves the edited model as `<run_dir>/unlearned/<method>/` with a
record of what it did and cost: counts and content hashes of its texts, never the texts. The active
mask is left alone. `codeunlearn evaluate` scores every edited model it finds there next to the
base, codebook and masked models.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from codeunlearn.baselines.registry import method_names, reads_retain, unlearn_with_gradients
from codeunlearn.core.config import BaselineConfig, RunConfig
from codeunlearn.core.errors import ConfigError
from codeunlearn.core.failpoints import failpoint
from codeunlearn.core.paths import RunPaths, open_run
from codeunlearn.core.serialization import without_nan
from codeunlearn.data.batching import Batch
from codeunlearn.data.corpus import content_hash
from codeunlearn.data.tables import batch_texts
from codeunlearn.data.topics import read_splits
from codeunlearn.evaluation.evaluator import EvalReport, EvalSet, Evaluator
from codeunlearn.model import assets
from codeunlearn.model.loading import load_model, served_as_configured
from codeunlearn.model.surgery import CodebookModel, load_codebook_model, save_codebook_model, weights_hash
from codeunlearn.pipeline.comparison import baseline_texts, membership_sets

log = logging.getLogger(__name__)

RECORD_FILE = "record.json"  # beside the edited model's weights
STAGING_DIR = ".unlearned.partial"  # under run_dir, outside unlearned/: where an edited model is built


@dataclass(frozen=True)
class BaselineRecord:
    """What one gradient unlearning run did and cost, saved as record.json beside its edited model.

    Texts are named by count and content hash (`corpus.content_hash`) only: no forget text is kept.
    """

    method: str
    config: BaselineConfig  # the method's settings, `method` included
    forget_examples: int
    forget_hash: str
    retain_examples: int  # 0 for a method without a retain term (GA)
    retain_hash: str
    codebook_weights: str  # `deletion.weights_hash` of the codebook model it started from
    steps: int
    tokens: int
    elapsed_s: float
    flops_estimate: float

    def to_json(self) -> dict[str, Any]:
        return without_nan(asdict(self))

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> BaselineRecord:
        """The record `to_json` wrote (an unknown FLOP count was saved as null)."""
        flops = payload["flops_estimate"]
        return cls(
            **{
                **payload,
                "config": BaselineConfig(**payload["config"]),
                "flops_estimate": math.nan if flops is None else flops,
            }
        )

    def summary(self) -> str:
        """One line: the method, its steps, data and cost."""
        return f"{self.method}: {self.cost()}"

    def cost(self) -> str:
        """Steps, examples, seconds, FLOPs and tokens, as words."""
        return (
            f"{self.steps} steps on {self.forget_examples} forget and {self.retain_examples} retain "
            f"examples in {self.elapsed_s:.1f} s ({self.flops_estimate:.2e} FLOPs, {self.tokens} tokens)"
        )


def unlearn_with_baseline(config: RunConfig) -> BaselineRecord:
    """Fine-tune a copy of the run's codebook model with `unlearn.method`; save it and its record.

    Args:
        config: A run with prepared splits and a trained codebook model; `config.unlearn` names a
            gradient method, its settings and `forget_limit`.

    Returns:
        The record saved beside the edited model in `<run_dir>/unlearned/<method>/`.

    Raises:
        CodeunlearnError: the splits are not prepared (`codeunlearn prepare`) or the codebook model is
            not trained (`codeunlearn train`); nothing is written then.
        ConfigError: unlearn.method is mask, or a setting this model cannot take (e.g.
            unlearn.baseline.rmu_layer past its layers).
    """
    paths = open_run(config)
    if not config.unlearn.uses_gradients:
        raise ConfigError(
            f"unlearn.method={config.unlearn.method} runs no gradient baseline: set unlearn.method to one "
            f"of {', '.join(method_names())}, or mask with pipeline.unlearn"
        )
    gradient = config.unlearn.gradient_config
    gradient.validate("unlearn.baseline")
    forget, retain = texts_for_baseline(config)
    retain = retain if reads_retain(gradient) else []
    codebook_model = load_model(config)  # names `codeunlearn train` when there is no model
    result = unlearn_with_gradients(
        codebook_model.model,
        _batches(forget, codebook_model, config),
        _batches(retain, codebook_model, config),
        gradient,
    )
    record = BaselineRecord(
        method=gradient.method,
        config=gradient,
        forget_examples=len(forget),
        forget_hash=content_hash(forget),
        retain_examples=len(retain),
        retain_hash=content_hash(retain),
        codebook_weights=weights_hash(paths.model_dir),
        steps=result.steps,
        tokens=result.tokens,
        elapsed_s=result.elapsed_s,
        flops_estimate=result.flops_estimate,
    )
    directory = save_edited_model(codebook_model, record, paths)
    log.info("%s; saved to %s", record.summary(), directory)
    return record


def _batches(texts: list[str], codebook_model: CodebookModel, config: RunConfig) -> list[Batch]:
    # No texts, no batches (the tokenizer refuses an empty list); unlearn_with_gradients then says
    # which set it needed.
    if not texts:
        return []
    return batch_texts(
        texts, codebook_model.tokenizer, config.data.max_length, config.unlearn.baseline.batch_size
    )


def texts_for_baseline(config: RunConfig) -> tuple[list[str], list[str]]:
    """The forget subset and retain texts `codeunlearn compare` trains the baselines on.

    Returns:
        `unlearn.forget_limit` forget examples (those the codebook model was trained on first) and
        4x as many retain examples, as `comparison.baseline_texts` picks them.

    Raises:
        CodeunlearnError: the splits or the corpus partition are missing (run `codeunlearn prepare`).
    """
    splits = read_splits(RunPaths(Path(config.run_dir)).splits_dir)
    members, _ = membership_sets(config, splits)
    return baseline_texts(splits, members, config.unlearn.forget_limit)


def save_edited_model(codebook_model: CodebookModel, record: BaselineRecord, paths: RunPaths) -> Path:
    """Save an edited model and its record as `unlearned/<method>/`, replacing an earlier one whole.

    Both are written to a staging directory outside `unlearned/` and moved in by one rename, so
    `unlearned/` holds only whole edited models. A failure clears the staging directory on the way
    out and keeps the earlier model; a run killed midway leaves it for the next run of the method
    to clear (putting back an earlier model it had set aside).

    Returns:
        The edited model's directory.
    """
    target = paths.unlearned_dir / record.method
    staging = paths.root / STAGING_DIR / record.method
    _tidy(staging, target)
    try:
        save_codebook_model(codebook_model, staging)
        (staging / RECORD_FILE).write_text(json.dumps(record.to_json(), indent=2))
        failpoint("unlearned-staged")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # set aside, not deleted: no model is missing for longer than two renames
            os.replace(target, _set_aside(staging))
        os.replace(staging, target)
    finally:
        _tidy(staging, target)
    return target


def _set_aside(staging: Path) -> Path:
    return staging.with_name(staging.name + ".old")


def _tidy(staging: Path, target: Path) -> None:
    """Put back an earlier model set aside if the new one never replaced it, then remove the staging
    directory, the `.partial` one `save_codebook_model` builds it in, and their parent once empty."""
    if _set_aside(staging).is_dir() and not target.exists():
        os.replace(_set_aside(staging), target)
    for leftover in (staging, staging.with_name(staging.name + ".partial"), _set_aside(staging)):
        shutil.rmtree(leftover, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: another method's staging is there
        staging.parent.rmdir()


def edited_models(paths: RunPaths) -> list[tuple[BaselineRecord, Path]]:
    """Every whole edited model under `unlearned/` (one with a record), by method name."""
    if not paths.unlearned_dir.is_dir():
        return []
    found = []
    for directory in sorted(paths.unlearned_dir.iterdir()):
        if (directory / RECORD_FILE).is_file():
            record = BaselineRecord.from_json(json.loads((directory / RECORD_FILE).read_text()))
            found.append((record, directory))
    return found


def load_edited_model(config: RunConfig, directory: Path) -> CodebookModel:
    """An edited model, searching codes and masking as `config.bottleneck` says (as `load_model`)."""
    codebook_model = load_codebook_model(directory, assets.pick_device(config.model.device))
    return served_as_configured(codebook_model, config.bottleneck)


def score_edited_models(config: RunConfig, eval_sets: list[EvalSet], report: EvalReport) -> dict[str, dict]:
    """Score every edited model under `unlearned/` as a variant of `report`, named by its method.

    An edited model made from another codebook model than the run's (trained again since) is not
    scored: its drops would be measured against the wrong model.

    Args:
        config: The run.
        eval_sets: The sets the report's other variants were scored on.
        report: Holds the base and codebook models' NLL; gains an `nll` entry and a note per method.

    Returns:
        Per method: NLL and normalised drop on each main split and the record's cost, or `skipped`
        and why; empty when there is no edited model.
    """
    paths = RunPaths(Path(config.run_dir))
    found = edited_models(paths)
    current = weights_hash(paths.model_dir) if found else ""
    summaries: dict[str, dict] = {}
    for record, directory in found:
        if record.codebook_weights != current:
            reason = (
                f"made from another codebook model than {paths.model_dir}: run `codeunlearn unlearn "
                f"unlearn.method={record.method}` again"
            )
            log.warning("unlearned/%s not scored: %s", record.method, reason)
            report.notes.append(f"{record.method}: not scored ({reason})")
            summaries[record.method] = {"skipped": reason}
            continue
        edited = load_edited_model(config, directory)
        report.nll[record.method] = Evaluator(edited, eval_sets).score_codebook(None)
        del edited
        report.notes.append(
            f"{record.method}: a gradient baseline's edit, unlearned/{record.method}: {record.cost()}"
        )
        summaries[record.method] = _scores(report, record)
    return summaries


def _scores(report: EvalReport, record: BaselineRecord) -> dict[str, Any]:
    scores: dict[str, Any] = {}
    for key in report.main_keys():
        scores[f"{key}_nll"] = report.nll[record.method][key]
        scores[f"{key}_drop"] = report.drop(record.method, key)
    cost = ("steps", "tokens", "elapsed_s", "flops_estimate", "forget_examples", "retain_examples")
    return without_nan(scores | {name: getattr(record, name) for name in cost})
