"""`codeunlearn sweep`: every label topic of the corpus as its own calibrated request.

Library modules are imported inside the command: importing torch costs seconds, and `--help` should
not pay for it.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import typer

from codeunlearn.cli.common import CONFIG_OPTION, EXTRA, OVERRIDES_HELP, VERBOSE_OPTION, app, run_stage

RESULTS_DIR_OPTION = typer.Option(
    None, help="Where the table, plot and summary go (default: sweep.results_dir)."
)


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def sweep(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    topics: str = typer.Option(
        "",
        help="Comma-separated labels to sweep (default: sweep.topics, else every "
        "label with sweep.min_examples examples).",
    ),
    results_dir: Path | None = RESULTS_DIR_OPTION,
    track: bool = typer.Option(True, help="Track a parent MLflow run with a child run per topic."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Answer every label topic of the corpus as its own calibrated request on the trained codebook:
    per topic the chosen S', forget and retain drops (normalised and raw nats), keyword-free drop,
    random-mask control and status. Resumable: topics already answered for this codebook and these
    settings are read back, not redone. Writes sweep-<corpus>.json/.md/.parquet/.png. Needs a trained
    codebook (`codeunlearn train` or `codeunlearn run`)."""
    from codeunlearn.pipeline import sweep_report
    from codeunlearn.pipeline.sweep import Sweep

    def stage(run_config: Any) -> dict:
        if topics:
            chosen = tuple(t.strip() for t in topics.split(",") if t.strip())
            run_config = replace(run_config, sweep=replace(run_config.sweep, topics=chosen))
        run = Sweep(run_config)
        if track:
            from codeunlearn.tracking.sweep import log_outputs, tracked_sweep

            rows, parent = tracked_sweep(run_config, run)
        else:
            rows, parent = run.run(), None
        setting = {
            "calibration": asdict(run_config.calibration),
            "gates": asdict(run_config.gates),
            "mining": asdict(run_config.mining),
            "settings_key": run.where().key,
        }
        rows = sweep_report.with_limits(rows, setting["gates"])
        totals = sweep_report.summary(rows, run.corpus, run.codebook, setting)
        paths = sweep_report.write(rows, totals, results_dir or Path(run_config.sweep.results_dir))
        if parent is not None:
            log_outputs(run_config, parent, paths, totals)
        typer.echo(sweep_report.to_markdown(rows, totals))
        typer.echo(f"written: {', '.join(str(p) for p in paths.values())}")
        return totals

    run_stage(ctx, config, verbose, stage)
