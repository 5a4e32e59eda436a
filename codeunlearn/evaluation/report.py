"""The report of one mask version: what it forgot, what it cost, how it compares, what attacks find.

It gathers what the run directory holds: the evaluation (always), and when they were run, the method
comparison with its relearning attack (`codeunlearn compare`), the knowledge probes (`codeunlearn
probe`: multiple choice, definition generation, general-text NLL), the collateral-damage table
(`codeunlearn collateral`) and the ablations (`codeunlearn ablate`). It writes report.md, its PNG
plots and a copy of every input under one directory; the certificate binds them by hash (see
codeunlearn.evaluation.certificate).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeunlearn.core.config import GatesConfig, RunConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.serialization import nan_for_none
from codeunlearn.evaluation import certificate, plots
from codeunlearn.evaluation.evaluator import EvalReport
from codeunlearn.evaluation.method_scores import MethodScore, render, render_quantized, render_relearning
from codeunlearn.evaluation.outcome import TopicOutcome
from codeunlearn.unlearning.masks import load_mask

log = logging.getLogger(__name__)

INPUTS = {  # name in the report -> path under the run directory
    "evaluation.json": "eval/report.json",
    "methods.json": "compare/methods.json",
    "probe.json": "eval/probe.json",
    "methods_probe.json": "compare/probe.json",
    "collateral.json": "eval/collateral.json",
    "ablation.json": "ablation/ablation.json",
}


@dataclass
class Report:
    directory: Path
    evaluation: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)  # artifact name -> written file
    results: dict[str, Any] = field(default_factory=dict)  # for the certificate


def publish(
    config: RunConfig, directory: Path, registry: Mapping[str, str] | None = None
) -> tuple[Report, str]:
    """Write the report and its certificate to `directory`, replacing an earlier report only once the
    new one is complete. Returns the report and the certificate file's sha256."""
    partial = directory.with_name(directory.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    report = write_report(config, partial)
    built = certificate.build(config, report.evaluation, report.files, report.results, registry)
    digest = certificate.write(built, partial / "certificate.json")
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(partial, directory)
    report.directory = directory
    report.files = {name: directory / name for name in report.files} | {
        "certificate.json": directory / "certificate.json"
    }
    return report, digest


def check_current(config: RunConfig) -> dict[str, Any]:
    """The evaluation of the run's active mask; an error when there is none or it evaluates another mask."""
    run_dir = Path(config.run_dir)
    evaluation_file, mask_file = run_dir / INPUTS["evaluation.json"], run_dir / "masks" / "active.json"
    if not evaluation_file.is_file() or not mask_file.is_file():
        raise CodeunlearnError(f"no evaluated mask in {run_dir}: run `codeunlearn run` (or evaluate) first")
    evaluation = json.loads(evaluation_file.read_text())
    digest = load_mask(mask_file).digest
    if evaluation.get("mask_digest") != digest:
        raise CodeunlearnError(
            f"eval/report.json evaluates mask {str(evaluation.get('mask_digest'))[:12]}, but the active mask "
            f"is {digest[:12]}: run `codeunlearn evaluate` first"
        )
    return evaluation


def write_report(config: RunConfig, directory: Path) -> Report:
    """Write report.md, plots/*.png and inputs/*.json of the run's active mask under `directory`."""
    run_dir = Path(config.run_dir)
    check_current(config)
    if directory.exists():
        shutil.rmtree(directory)  # a report describes one state of the run, never a mix of two
    (directory / "plots").mkdir(parents=True)
    inputs = {
        name: json.loads((run_dir / rel).read_text())
        for name, rel in INPUTS.items()
        if (run_dir / rel).is_file()
    }
    report = Report(directory, inputs["evaluation.json"])
    for name, rel in INPUTS.items():
        if name in inputs:
            report.files[f"inputs/{name}"] = _copy(run_dir / rel, directory / "inputs" / name)
    sections = [_evaluation_section(report, config.gates, config.topic.key, config.model.name)]
    if "methods.json" in inputs:
        sections.append(_methods_section(inputs["methods.json"], report))
    for name, rel_md, title in (
        ("probe.json", "eval/probe.md", "Knowledge probes: multiple choice, definitions, general text"),
        ("methods_probe.json", "compare/probe.md", "Knowledge probe on every method"),
        ("collateral.json", "eval/collateral.md", "Collateral damage per retained topic"),
        ("ablation.json", "ablation/ablation.md", "Ablations"),
    ):
        if name in inputs and (run_dir / rel_md).is_file():
            sections.append(f"## {title}\n\n" + (run_dir / rel_md).read_text())
    for png, rel in (("collateral.png", "eval/collateral.png"), ("ablation.png", "ablation/ablation.png")):
        if (run_dir / rel).is_file():
            report.files[f"plots/{png}"] = _copy(run_dir / rel, directory / "plots" / png)
            sections.append(f"![{png}](plots/{png})\n")
    report.results = _results(inputs)
    (directory / "report.md").write_text("\n\n".join(sections))
    report.files["report.md"] = directory / "report.md"
    return report


def _evaluation_section(report: Report, gates: GatesConfig, topic_key: str, model_name: str) -> str:
    evaluation = EvalReport(
        nll=report.evaluation["nll"],
        sweep=report.evaluation.get("sweep", []),
        calibration=report.evaluation.get("calibration", {}),
    )
    outcome = TopicOutcome.from_nll(evaluation.nll)
    failures = outcome.failures(gates)
    verdict = "passed" if not failures else "FAILED: " + "; ".join(failures)
    header = (
        f"# Deletion report: {topic_key}\n\n"
        f"Mask {str(report.evaluation.get('mask_digest'))[:12]} over the codebook model of "
        f"{model_name}. {outcome.summary(gates)} Gates (forget drop >= {gates.min_forget_drop}, "
        f"retain drop <= {gates.max_retain_drop}, random share <= {gates.max_random_share}, gain >= "
        f"{gates.min_gain} nats/token): {verdict}.\n"
    )
    if evaluation.sweep:
        report.files["plots/sweep_frontier.png"] = _save(
            plots.sweep_frontier(evaluation.sweep), report.directory / "plots" / "sweep_frontier.png"
        )
    deltas = {
        k.removeprefix("retain:"): evaluation.delta("masked", k)
        for k in evaluation.nll["masked"]
        if k.startswith("retain:")
    }
    if deltas:
        report.files["plots/topic_damage.png"] = _save(
            plots.topic_damage(deltas, evaluation.delta("masked", "forget")),
            report.directory / "plots" / "topic_damage.png",
        )
    figures = "\n".join(f"![{Path(n).name}]({n})" for n in report.files if n.startswith("plots/"))
    return header + "\n" + evaluation.render() + "\n" + figures + "\n"


def _methods_section(rows: list[dict[str, Any]], report: Report) -> str:
    scores = [MethodScore(**nan_for_none(row)) for row in rows]
    points = {s.method: (s.retain_drop, s.forget_drop) for s in scores if s.method != "codebook"}
    report.files["plots/methods_frontier.png"] = _save(
        plots.scores_frontier(points), report.directory / "plots" / "methods_frontier.png"
    )
    parts = ["## Masking against gradient baselines", render(scores), "", _frontier_sentence(scores)]
    parts.append("\n![methods_frontier.png](plots/methods_frontier.png)")
    if quantized := render_quantized(scores):
        parts += [
            "\n## Quantization attack: forget / retain drop with weights rounded (symmetric, groups of 128)",
            quantized,
        ]
    curves = {s.method: s.relearning for s in scores if s.relearning}
    if curves:
        report.files["plots/relearning.png"] = _save(
            plots.relearning_curves(curves), report.directory / "plots" / "relearning.png"
        )
        parts += [
            "\n## Relearning attack: held-out forget NLL after N fine-tuning steps on forget text "
            "(recovery toward the codebook model)",
            render_relearning(scores),
            "\n![relearning.png](plots/relearning.png)",
        ]
    return "\n".join(parts) + "\n"


def _frontier_sentence(scores) -> str:
    """Which methods no other method beats on both forget drop (higher) and retain drop (lower)."""
    edited = [s for s in scores if s.method != "codebook" and math.isfinite(s.forget_drop)]
    frontier = [
        s.method
        for s in edited
        if not any(
            o.forget_drop >= s.forget_drop
            and o.retain_drop <= s.retain_drop
            and o is not s
            and (o.forget_drop > s.forget_drop or o.retain_drop < s.retain_drop)
            for o in edited
        )
    ]
    return (
        "On the forget/retain frontier (no other method both forgets more and damages less): "
        + ", ".join(frontier)
        + "."
    )


def _results(inputs: dict[str, Any]) -> dict[str, Any]:
    """The figures the certificate records, beyond the evaluation itself."""
    results: dict[str, Any] = {}
    for row in inputs.get("methods.json", []):
        results.setdefault("methods", {})[row["method"]] = {
            k: row.get(k)
            for k in (
                "forget_drop",
                "retain_drop",
                "mia_auc_loss",
                "mia_auc_min_k",
                "wall_clock_s",
                "relearning",
            )
        }
    for name, key in (("probe.json", "probe"), ("methods_probe.json", "methods_probe")):
        if name in inputs:
            results[key] = _probe_results(inputs[name])
    if "collateral.json" in inputs:
        collateral = inputs["collateral.json"]
        results["collateral"] = {
            "spearman": collateral.get("spearman"),
            "rows": [{k: r[k] for k in ("topic", "masked_share", "nll_delta")} for r in collateral["rows"]],
        }
    return results


def _probe_results(probe: dict[str, Any]) -> dict[str, Any]:
    """Multiple-choice accuracy and verdicts, and, where they ran, definition chrF and general-text NLL
    per variant (a probe.json written before those probes existed has neither)."""
    results = {"accuracy": probe["accuracy"], "verdicts": probe["verdicts"]}
    if probe.get("definitions"):
        results["definitions_chrf"] = probe["definitions"]["chrf"]
    if probe.get("general_text") and not probe["general_text"].get("skipped"):
        results["general_text_nll"] = probe["general_text"]["nll"]
    return results


def _copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        figure.savefig(path, dpi=120)
    finally:
        plt.close(figure)
    return path
