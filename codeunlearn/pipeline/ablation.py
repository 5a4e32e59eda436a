"""Ablations: change one setting at a time around a base config, run each variant end to end, tabulate.

Every variant is a full `prepare -> train -> mine -> unlearn -> evaluate` run in its own run directory
under the ablation's output directory, with the spec's shared overrides (e.g. a smaller training
budget, so that variants are compared at equal cost). Variants that train the same codebook reuse one
trained model. S' (`mining.n_select`) needs neither training nor mining again: its rows come from the
S' sweep of the baseline variant's evaluation.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from codeunlearn.core.config import RunConfig, with_overrides
from codeunlearn.core.errors import CodeunlearnError, ConfigError
from codeunlearn.core.paths import open_run
from codeunlearn.core.serialization import without_nan
from codeunlearn.evaluation import plots
from codeunlearn.evaluation.evaluator import KEYWORD_FREE, EvalReport
from codeunlearn.pipeline.chain import run_all
from codeunlearn.training.stamp import same_training, training_stamp

log = logging.getLogger(__name__)

SWEEP_AXIS = "mining.n_select"


@dataclass(frozen=True)
class AblationSpec:
    """Which settings to vary (`section.key` -> values) and the overrides every variant shares."""

    axes: dict[str, tuple[Any, ...]]
    overrides: tuple[str, ...] = ()

    def validate(self, base: RunConfig) -> None:
        if not self.axes:
            raise ConfigError(
                "the ablation spec has no axes: add e.g. `axes: {bottleneck.top_k: [4, 8, 16]}`"
            )
        for axis, values in self.axes.items():
            if not values:
                raise ConfigError(f"ablation axis {axis} has no values: list at least one")
            for value in values:
                with_overrides(base, [*self.overrides, f"{axis}={value}"])


@dataclass
class AblationRow:
    axis: str  # "baseline" for the shared reference point
    value: str
    forget_drop: float
    retain_drop: float
    retain_delta: float  # retain NLL change over the codebook model, nats/token
    random_forget_drop: float  # a mask of as many random codes
    codebook_gain_forget: float  # base NLL - codebook NLL: what the bottleneck learned
    codebook_gain_retain: float
    n_masked: int
    seconds: float
    run_dir: str = ""
    # codebook / no-bottleneck reference NLL on the worst held-out split (eval.run_reference); NaN if off
    reference_ratio: float = float("nan")
    error: str = ""  # why the variant produced no mask (e.g. training collapsed); its figures are NaN
    # the masked drop on the held-out forget examples with none of the topic's words; NaN where that
    # split is empty (a keyword or regex topic)
    keyword_free_drop: float = float("nan")


@dataclass
class AblationResult:
    rows: list[AblationRow] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = [
            "| axis | value | forget drop | retain drop | retain Δnll | random-codes forget drop "
            "| keyword-free forget drop | codebook gain forget | codebook gain retain "
            "| codebook / reference NLL, worst split | masked codes | seconds |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            if r.error:
                empty = " |" * 9
                lines.append(f"| {r.axis} | {r.value} | failed: {r.error} |{empty} {r.seconds:.0f} |")
                continue
            ratio = "-" if math.isnan(r.reference_ratio) else f"{r.reference_ratio:.3f}"
            keyword_free = "-" if math.isnan(r.keyword_free_drop) else f"{r.keyword_free_drop:.3f}"
            lines.append(
                f"| {r.axis} | {r.value} | {r.forget_drop:.3f} | {r.retain_drop:.3f} | {r.retain_delta:+.4f} "
                f"| {r.random_forget_drop:.3f} | {keyword_free} | {r.codebook_gain_forget:.3f} "
                f"| {r.codebook_gain_retain:.3f} | {ratio} | {r.n_masked} | {r.seconds:.0f} |"
            )
        return "\n".join(lines)


def load_spec(path: Path) -> AblationSpec:
    """Read `axes:` (mapping of `section.key` to a list of values) and optional `overrides:` from YAML."""
    if not path.is_file():
        raise ConfigError(
            f"ablation spec {path} does not exist: pass a YAML file (see configs/ablation.yaml)"
        )
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = set(raw) - {"axes", "overrides"}
    if unknown:
        raise ConfigError(f"ablation spec {path}: unknown keys {sorted(unknown)}; use `axes` and `overrides`")
    axes = raw.get("axes") or {}
    if not isinstance(axes, dict) or not all(isinstance(v, list) for v in axes.values()):
        raise ConfigError(f"ablation spec {path}: `axes` must map `section.key` to a list of values")
    return AblationSpec(
        axes={k: tuple(v) for k, v in axes.items()},
        overrides=tuple(str(o) for o in raw.get("overrides") or ()),
    )


def run_ablation(base: RunConfig, spec: AblationSpec, out_dir: Path) -> AblationResult:
    """Run the baseline variant and one variant per axis value that differs from the baseline."""
    spec.validate(base)
    sweep = spec.axes.get(SWEEP_AXIS, ())
    # Variants that leave the reference's key alone (the bottleneck's settings) share its fine-tune.
    shared = [*spec.overrides, f"eval.reference_cache={out_dir / 'reference_nll.json'}"]
    baseline_config = with_overrides(
        base, [*shared, f"run_dir={out_dir / 'baseline'}", f"eval.sweep={_yaml_list(sweep)}"]
    )
    result = AblationResult()
    trained: list[tuple[dict, Path]] = []  # training stamp, model directory
    report, seconds = _run_variant(baseline_config, trained)
    result.rows.append(_row("baseline", "-", report, seconds, baseline_config))
    result.rows += [_sweep_row(report, point, baseline_config) for point in report.sweep]
    for axis, values in spec.axes.items():
        if axis == SWEEP_AXIS:
            continue
        for value in values:
            config = with_overrides(
                base,
                [
                    *shared,
                    f"{axis}={value}",
                    f"run_dir={out_dir / _slug(axis, value)}",
                    "eval.sweep=[]",
                ],
            )
            if _setting(config, axis) == _setting(baseline_config, axis):
                continue  # the baseline row already is this variant
            started = time.perf_counter()
            try:
                report, seconds = _run_variant(config, trained)
            except CodeunlearnError as error:  # a result, not a crash: e.g. a codebook that collapsed
                log.warning("ablation variant %s=%s failed: %s", axis, value, error)
                seconds = time.perf_counter() - started
                result.rows.append(_failed_row(axis, str(value), error, seconds, config))
                continue
            result.rows.append(_row(axis, str(value), report, seconds, config))
    _write(out_dir, result)
    return result


def _run_variant(config: RunConfig, trained: list[tuple[dict, Path]]) -> tuple[EvalReport, float]:
    """One end-to-end run; a model already trained with the same settings is linked, not retrained."""
    started = time.perf_counter()
    paths = open_run(config)
    stamp = training_stamp(config)
    same = next((d for s, d in trained if same_training(s, stamp)), None)
    if same is not None and not paths.model_dir.exists():
        paths.model_dir.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(same.resolve(), paths.model_dir, target_is_directory=True)
    log.info("ablation variant %s", config.run_dir)
    report = run_all(config)
    if same is None:
        trained.append((stamp, paths.model_dir))
    return report, time.perf_counter() - started


def _row(axis: str, value: str, report: EvalReport, seconds: float, config: RunConfig) -> AblationRow:
    mask = json.loads((Path(config.run_dir) / "masks" / "active.json").read_text())
    return AblationRow(
        axis=axis,
        value=value,
        forget_drop=report.drop("masked", "forget"),
        retain_drop=report.drop("masked", "retain"),
        retain_delta=report.delta("masked", "retain"),
        random_forget_drop=report.drop("random", "forget"),
        codebook_gain_forget=report.nll["base"]["forget"] - report.nll["codebook"]["forget"],
        codebook_gain_retain=report.nll["base"]["retain"] - report.nll["codebook"]["retain"],
        n_masked=len(mask.get("code_ids", [])),
        seconds=seconds,
        run_dir=config.run_dir,
        reference_ratio=_reference_ratio(report),
        keyword_free_drop=_keyword_free_drop(report, "masked"),
    )


def _failed_row(axis: str, value: str, error: Exception, seconds: float, config: RunConfig) -> AblationRow:
    nan, reason = float("nan"), str(error).splitlines()[0]
    return AblationRow(axis, value, nan, nan, nan, nan, nan, nan, 0, seconds, config.run_dir, error=reason)


def _reference_ratio(report: EvalReport) -> float:
    """The worst held-out split's codebook NLL over the reference's; NaN without a reference."""
    reference = report.nll.get("reference")
    if not reference:
        return float("nan")
    codebook = report.nll["codebook"]
    # The keyword-free split is a subset of forget, not a split of its own: left out, so that the
    # figure means what it meant before that split existed.
    splits = [split for split in reference if split in codebook and split != KEYWORD_FREE]
    return max(codebook[split] / reference[split] for split in splits)


def _keyword_free_drop(report: EvalReport, variant: str) -> float:
    """The variant's normalised drop on the keyword-free forget split; NaN where it was not scored."""
    if KEYWORD_FREE not in report.nll.get("codebook", {}):
        return float("nan")
    return report.drop(variant, KEYWORD_FREE)


def _sweep_row(report: EvalReport, point: dict[str, float], config: RunConfig) -> AblationRow:
    n = int(point["n_select"])
    return AblationRow(
        axis=SWEEP_AXIS,
        value=str(n),
        forget_drop=point["mined_forget_drop"],
        retain_drop=report.drop(f"mined@{n}", "retain"),
        retain_delta=point["mined_retain_delta"],
        random_forget_drop=point["random_forget_drop"],
        codebook_gain_forget=report.nll["base"]["forget"] - report.nll["codebook"]["forget"],
        codebook_gain_retain=report.nll["base"]["retain"] - report.nll["codebook"]["retain"],
        n_masked=n,
        seconds=0.0,
        run_dir=config.run_dir,
        reference_ratio=_reference_ratio(report),
        keyword_free_drop=_keyword_free_drop(report, f"mined@{n}"),
    )


def _write(out_dir: Path, result: AblationResult) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [without_nan(asdict(r)) for r in result.rows]
    (out_dir / "ablation.json").write_text(json.dumps(rows, indent=2))
    (out_dir / "ablation.md").write_text(result.to_markdown() + "\n")
    figure = plots.ablation_frontier([asdict(r) for r in result.rows])
    try:
        figure.savefig(out_dir / "ablation.png", dpi=120)
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)


def _yaml_list(values: Sequence[Any]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _setting(config: RunConfig, axis: str) -> Any:
    section, _, key = axis.rpartition(".")
    node: Any = config
    for part in [p for p in section.split(".") if p]:
        node = getattr(node, part)
    return getattr(node, key)


def _slug(axis: str, value: Any) -> str:
    return f"{axis}={value}".replace("/", "_")
