"""A sweep tracked in MLflow: one parent run, one child run per topic answered, the table as artifacts."""

from __future__ import annotations

from pathlib import Path

from codeunlearn.core.config import RunConfig
from codeunlearn.pipeline.sweep import Sweep
from codeunlearn.tracking.tracker import Tracker

TOPIC_PARAMS = ("topic", "status", "chosen_n_select", "test_n_select", "reasons")


def tracked_sweep(config: RunConfig, sweep: Sweep) -> tuple[list[dict], str]:
    """Run `sweep` under a parent run named `sweep-<corpus>`; returns the rows and the parent run id."""
    tracker = Tracker(config)
    with tracker.run(f"sweep-{sweep.corpus}") as parent:

        def on_topic(row: dict) -> None:
            child = tracker.start_run(f"sweep-{row['topic']}", parent, {k: row.get(k) for k in TOPIC_PARAMS})
            metrics = {
                k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            tracker.log_dict(child, {"frontier": row.get("frontier", [])}, "frontier.json")
            tracker.finish_run(child, metrics, "FINISHED")

        rows = sweep.run(on_topic)
        return rows, parent


def log_outputs(config: RunConfig, run_id: str, paths: dict[str, Path], totals: dict) -> None:
    tracker = Tracker(config)
    for path in paths.values():
        tracker.log_file(run_id, path, "sweep")
    tracker.log_metrics(
        run_id, {k: v for k, v in totals.items() if isinstance(v, (int, float)) and v is not None}
    )
