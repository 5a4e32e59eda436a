"""The pipeline stages with MLflow tracking: each runs its library stage inside a run nested under the
pipeline run and logs what a reviewer needs, with no raw forget-set text (counts and hashes only).

Prefect tasks call these one to one; `codeunlearn pipeline` calls them without Prefect.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from codeunlearn.core.config import RunConfig, TopicConfig
from codeunlearn.core.errors import CodeunlearnError, ConfigError
from codeunlearn.core.failpoints import failpoint
from codeunlearn.core.paths import RunPaths
from codeunlearn.core.redaction import redact_uri
from codeunlearn.evaluation import plots
from codeunlearn.evaluation import report as reporting
from codeunlearn.evaluation.evaluator import evaluation_rows
from codeunlearn.evaluation.outcome import TopicOutcome
from codeunlearn.model.surgery import weights_hash
from codeunlearn.pipeline import stages as pipeline
from codeunlearn.pipeline.chain import run_chain
from codeunlearn.pipeline.evaluate import evaluate as evaluate_stage
from codeunlearn.requests.forgotten import forgotten_topics
from codeunlearn.requests.lineage import carry_requests, promote_unless_carrying
from codeunlearn.requests.queue import RequestStore
from codeunlearn.store.code_store import CodeStore
from codeunlearn.tracking.tracker import Tracker
from codeunlearn.training.stamp import trained_model_matches
from codeunlearn.unlearning.active_mask import activate, candidate_path, read_candidate
from codeunlearn.unlearning.masks import mask_rows

log = logging.getLogger(__name__)


@contextmanager
def pipeline_run(config: RunConfig) -> Iterator[str]:
    """The parent MLflow run every stage nests under: yields its id; FAILED if the block raises.

    Raises:
        ConfigError: unlearn.method is a gradient baseline; the tracked pipeline registers masks only.
    """
    if config.unlearn.uses_gradients:  # before any MLflow run exists, so nothing is half-written
        raise ConfigError(
            f"unlearn.method={config.unlearn.method!r}: the tracked pipeline registers mask versions only; "
            "set unlearn.method=mask, or run a gradient baseline with `codeunlearn run` or `codeunlearn "
            "unlearn` (it writes <run_dir>/unlearned/<method>/) or compare it with `codeunlearn compare`"
        )
    with Tracker(config).run(f"pipeline {config.topic.key}") as run_id:
        yield run_id


def run_pipeline(config: RunConfig) -> dict:
    """The stage chain, tracked, in this process (no Prefect)."""
    with pipeline_run(config) as parent:
        stages = TrackedStages(config, parent)
        results = run_chain(stages)
    return {
        "mlflow_run_id": parent,
        "tracking_uri": redact_uri(config.tracking.resolved_tracking_uri()),
        "codebook_version": stages.codebook_version,
        **results["evaluate"],
    }


class TrackedStages:
    """The five stages as MLflow runs nested under `parent_run_id`, for `run_chain`: the codebook
    version `train` registers and the mask version `unlearn` registers are handed down the chain."""

    def __init__(self, config: RunConfig, parent_run_id: str) -> None:
        self.config = config
        self.parent_run_id = parent_run_id
        self.codebook_version = ""
        self.mask_version = ""

    def prepare(self) -> dict:
        return prepare(self.config, self.parent_run_id)

    def train(self) -> str:
        self.codebook_version = train(self.config, self.parent_run_id)
        return self.codebook_version

    def mine(self) -> dict:
        return mine(self.config, self.parent_run_id)

    def unlearn(self) -> str:
        self.mask_version = unlearn(self.config, self.parent_run_id, self.codebook_version)
        return self.mask_version

    def evaluate(self) -> dict:
        return evaluate(self.config, self.parent_run_id, self.mask_version, self.codebook_version)


def public_manifest(config: RunConfig) -> dict:
    """Counts and hashes of the corpus partition and the topic's splits; no text, no topic words."""
    paths = RunPaths(Path(config.run_dir))
    corpus = json.loads((paths.corpus_dir / "manifest.json").read_text())
    topic = json.loads((paths.splits_dir / "manifest.json").read_text())
    splits = {
        name: {"count": e["count"], "content_hash": e["content_hash"]} for name, e in topic["splits"].items()
    }
    return {
        "corpus": corpus,
        "topic": {"key": config.topic.key, "kind": topic["kind"], "control_method": topic["control_method"]},
        "splits": splits,
    }


def prepare(config: RunConfig, parent_run_id: str) -> dict:
    tracker = Tracker(config)
    with tracker.run("prepare", parent_run_id) as run_id:
        pipeline.prepare(config, _forgotten(config))
        manifest = public_manifest(config)
        tracker.log_dict(run_id, manifest, "data_manifest.json")
        tracker.log_metrics(
            run_id, {f"n_{name}": entry["count"] for name, entry in manifest["splits"].items()}
        )
    return manifest


def _forgotten(config: RunConfig) -> tuple[TopicConfig, ...]:
    """The topics the active mask forgets besides the config's, its requests' included."""
    paths = RunPaths(Path(config.run_dir))
    names = pipeline.active_sources(paths)
    if not names:
        return ()
    return forgotten_topics(RequestStore(paths.store_dir), names, config.topic, config.topic.key)


def train(config: RunConfig, parent_run_id: str) -> str:
    """Train the codebook (or reuse the one trained with the same settings) and register it; requests
    answered on a codebook with other weights are carried to the new version (requests.lineage)."""
    tracker = Tracker(config)
    paths = RunPaths(Path(config.run_dir))
    with tracker.run("train", parent_run_id) as run_id:
        if trained_model_matches(config):
            tracker.log_params(run_id, {"reused_model": "true"})
            pipeline.follow_codebook(config)
        else:
            result = pipeline.train_codebook(config)
            tracker.log_history(run_id, result.history)
            tracker.log_metrics(
                run_id,
                {
                    "final_loss": result.final_loss,
                    "final_recon": result.final_recon,
                    "dead_share": result.dead_share,
                    "elapsed_s": result.elapsed_s,
                    "tokens": result.tokens,
                },
            )
        manifest = json.loads((paths.corpus_dir / "manifest.json").read_text())
        version = tracker.register_codebook(
            run_id,
            paths.model_dir,
            {
                "weights_sha256": weights_hash(paths.model_dir),
                "corpus_hash": manifest["content_hash"],
                "base_model": config.model.name,
                "layer": str(config.bottleneck.layer),
                "n_codes": str(config.bottleneck.n_codes),
                "top_k": str(config.bottleneck.top_k),
                "run_dir": str(paths.root.resolve()),
            },
        )
        tracker.log_params(run_id, {"codebook_version": version})
        carried = carry_requests(config, tracker, version)
        if carried:
            tracker.log_metrics(run_id, {"carried_requests": len(carried)})
    log.info("codebook model %s version %s", tracker.codebook_name, version)
    return version


def mine(config: RunConfig, parent_run_id: str) -> dict:
    """Mine the topic's codes; log a summary of the code statistics and a code-usage plot."""
    tracker = Tracker(config)
    paths = RunPaths(Path(config.run_dir))
    with tracker.run("mine", parent_run_id) as run_id:
        selected = pipeline.mine(config)
        selection = json.loads(paths.selection_file.read_text())
        store = CodeStore(paths.store_dir)
        counts = {
            split: store.read_counts(selection["counts_run"], split)
            for split in ("forget", "control", "retain")
        }
        summary = {
            "rule": selected.rule,
            "n_selected": len(selected.code_ids),
            "n_eligible": selected.n_eligible,
            "counts_run": selection["counts_run"],
            "forget_data_hash": selection["data_hash"],
            "splits": {
                split: {
                    "n_tokens": c.n_tokens,
                    "n_examples": c.n_examples,
                    "codes_used": int((c.token_counts > 0).sum()),
                    "selected_share_of_firings": float(
                        c.token_counts[selected.code_ids].sum() / max(c.token_counts.sum(), 1)
                    ),
                }
                for split, c in counts.items()
            },
            "top_scores": [float(s) for s in np.sort(selected.scores)[::-1][:10]],
        }
        tracker.log_dict(run_id, summary, "code_statistics.json")
        tracker.log_metrics(
            run_id,
            {"n_selected": summary["n_selected"], "n_eligible": summary["n_eligible"]}
            | {f"codes_used_{s}": v["codes_used"] for s, v in summary["splits"].items()},
        )
        _log_figure(
            tracker,
            run_id,
            plots.code_usage({s: c.token_counts for s, c in counts.items()}, selected.code_ids.tolist()),
            "plots/code_usage.png",
        )
    return summary


def unlearn(config: RunConfig, parent_run_id: str, codebook_version: str) -> str:
    """Build the candidate mask (the mined codes with the active mask) and register it as a masked-model
    version; it becomes active only once `evaluate` finds that it clears the gates."""
    tracker = Tracker(config)
    paths = RunPaths(Path(config.run_dir))
    with tracker.run("unlearn", parent_run_id) as run_id:
        mask = pipeline.propose_mask(config).mask
        failpoint("pipeline-after-propose")
        key = f"pipeline:{config.topic.key}"
        version = tracker.find_mask_version(mask.digest, key) or tracker.register_mask(
            mask,
            codebook_version,
            key,
            {"topic": config.topic.key, "pipeline_run_id": parent_run_id},
            run_id,
        )
        rows = mask_rows(mask, version, codebook_version)  # keyed: a rerun replaces, never adds
        CodeStore(paths.store_dir).append("mask_codes", rows, prefix="mask", key=f"v{version}")
        tracker.log_file(run_id, candidate_path(paths), "mask")
        tracker.log_metrics(run_id, {"n_masked_codes": len(mask.code_ids)})
        tracker.log_params(run_id, {"mask_version": version, "mask_digest": mask.digest})
    return version


def evaluate(config: RunConfig, parent_run_id: str, mask_version: str, codebook_version: str) -> dict:
    """Evaluate the candidate mask; log metrics, the report and plots; if it clears the gates, make it
    the active mask and promote its version, else leave both as they were."""
    tracker = Tracker(config)
    paths = RunPaths(Path(config.run_dir))
    candidate = read_candidate(paths)
    registered = tracker.mask_version_tags(mask_version).get("mask_digest")
    if registered != candidate.mask.digest:  # before any run exists
        raise CodeunlearnError(
            f"mask version {mask_version} holds mask {str(registered)[:12]}, but the candidate in "
            f"{candidate_path(paths)} is {candidate.mask.digest[:12]}: run the unlearn stage again"
        )
    with tracker.run("evaluate", parent_run_id) as run_id:
        report = evaluate_stage(config, mask=candidate.mask)
        metrics = {
            f"nll_{variant}_{key}": value
            for variant, scores in report.nll.items()
            for key, value in scores.items()
            if "@" not in variant
        }
        outcome = TopicOutcome.from_nll(report.nll)
        reasons = outcome.failures(config.gates)
        tracker.log_metrics(
            run_id, metrics | outcome.metrics(config.gates, nll=False) | {"gates_passed": float(not reasons)}
        )
        for row in report.sweep:
            tracker.log_metrics(
                run_id, {k: v for k, v in row.items() if k != "n_select"}, step=int(row["n_select"])
            )
        tracker.log_file(run_id, paths.eval_dir / "report.md", "report")
        tracker.log_file(run_id, paths.eval_dir / "report.json", "report")
        if report.sweep:
            _log_figure(tracker, run_id, plots.sweep_frontier(report.sweep), "plots/sweep_frontier.png")
        deltas = {
            k.removeprefix("retain:"): report.delta("masked", k)
            for k in report.nll["masked"]
            if k.startswith("retain:")
        }
        if deltas:
            _log_figure(
                tracker,
                run_id,
                plots.topic_damage(deltas, report.delta("masked", "forget")),
                "plots/topic_damage.png",
            )
        tracker.tag_mask_version(mask_version, outcome.tags(config.gates))
        if not reasons:  # active first: a crash between leaves production behind the active mask, not ahead
            activate(
                paths,
                candidate.mask,
                f"pipeline:{config.topic.key}",
                candidate.base_digest,
                over=candidate.weights,
            )
            promote_unless_carrying(tracker, paths.store_dir, mask_version)
        rows = evaluation_rows(
            f"pipeline-v{mask_version}",
            candidate.mask,
            mask_version,
            codebook_version,
            {v: report.nll[v] for v in ("base", "codebook", "masked")},
            passed=not reasons,
        )
        # keyed by version: evaluating the same version again replaces its rows, never adds to them
        CodeStore(paths.store_dir).append("evaluations", rows, prefix="pipeline", key=f"v{mask_version}")
    return {
        "forget_drop": outcome.forget_drop,
        "retain_drop": outcome.retain_drop,
        "forget_nats": outcome.forget_nats,
        "retain_nats": outcome.retain_nats,
        "promoted": not reasons,
        "gate_failures": reasons,
        "mask_version": mask_version,
    }


def report(config: RunConfig) -> dict:
    """Write the report and the deletion certificate of the active mask, log both to MLflow in a
    `report` run, and tag the mask's registered version with the certificate's sha256."""
    tracker = Tracker(config)
    evaluation = reporting.check_current(config)  # before any run or file exists
    version = tracker.latest_mask_version(evaluation["mask_digest"])
    codebook_version = (
        tracker.mask_version_tags(version).get("parent_codebook_version", "") if version else ""
    )
    with tracker.run(f"report {config.topic.key}") as run_id:
        written, certificate_sha256 = reporting.publish(
            config,
            Path(config.run_dir) / "report",
            registry={
                "tracking_uri": tracker.uri,
                "report_run_id": run_id,
                "masked_model": tracker.masked_name,
                "mask_version": version or "",
                "codebook_model": tracker.codebook_name,
                "codebook_version": codebook_version,
            },
        )
        tracker.log_directory(run_id, written.directory, "report")
        tracker.client.set_tag(run_id, "codeunlearn.mask_version", version or "unregistered")
        tracker.client.set_tag(run_id, "codeunlearn.certificate_sha256", certificate_sha256)
        if version:
            tracker.tag_mask_version(
                version, {"certificate_sha256": certificate_sha256, "report_run_id": run_id}
            )
        else:
            log.warning(
                "the active mask is not a registered version: run `codeunlearn pipeline` to register it"
            )
    return {
        "directory": str(written.directory),
        "certificate_sha256": certificate_sha256,
        "mask_version": version,
        "mlflow_run_id": run_id,
    }


def _log_figure(tracker: Tracker, run_id: str, figure, artifact_file: str) -> None:
    import matplotlib.pyplot as plt

    try:
        tracker.log_figure(run_id, figure, artifact_file)
    finally:
        plt.close(figure)
