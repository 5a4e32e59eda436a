"""The stage commands: prepare, train, mine, unlearn, evaluate, run, pipeline, translate-eval, sql.

Library modules are imported inside each command: importing torch costs seconds, and `--help`
should not pay for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from codeunlearn.cli.common import (
    CONFIG_OPTION,
    EXTRA,
    OVERRIDES_HELP,
    RUN_DIR_OPTION,
    VERBOSE_OPTION,
    app,
    fail,
    run_stage,
)
from codeunlearn.core.errors import CodeunlearnError


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def prepare(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """Load the corpus, split it train/test, and build the topic's forget/control/retain splits."""
    from codeunlearn.pipeline import stages as pipeline

    splits = run_stage(ctx, config, verbose, pipeline.prepare)
    for name, entry in splits.manifest["splits"].items():
        typer.echo(f"{name:14s} {entry['count']:7d} examples  sha256 {entry['content_hash'][:16]}")


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def train(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """Train the codebook bottleneck into the base model once, and save the codebook model."""
    from codeunlearn.pipeline import stages as pipeline

    result = run_stage(ctx, config, verbose, pipeline.train_codebook)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports for all processes
        return
    typer.echo(
        f"trained {result.steps} steps, {result.tokens} tokens in {result.elapsed_s:.0f} s: "
        f"loss {result.final_loss:.3f}, reconstruction {result.final_recon:.3f}, "
        f"dead codes {result.dead_share:.1%}"
    )


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def mine(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """Count code firings on the forget, control and retain sets and select the topic's codes."""
    from codeunlearn.pipeline import stages as pipeline

    selected = run_stage(ctx, config, verbose, pipeline.mine)
    typer.echo(f"selected {len(selected.code_ids)} codes ({selected.n_eligible} eligible) by {selected.rule}")


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def unlearn(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    remove: str | None = typer.Option(None, help="Undo: remove this topic's codes from the active mask."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Mask the selected codes (union with the active mask); no gradient steps. --remove undoes one topic.
    With unlearn.method=ga, graddiff, npo or rmu a gradient baseline runs instead: it fine-tunes a copy of
    the trained codebook model on unlearn.forget_limit forget examples and 4x as many retain examples (the
    texts `codeunlearn compare` uses; settings under unlearn.baseline, e.g. unlearn.baseline.epochs=2) and
    saves it with a record of its cost as unlearned/<method>/, replacing an earlier one; the active mask
    is left alone. `codeunlearn evaluate` then scores it."""
    from codeunlearn.pipeline import stages as pipeline

    def stage(run_config: Any) -> str:
        if remove:
            return _mask_summary(pipeline.forget_source(run_config, remove))
        if run_config.unlearn.uses_gradients:
            from codeunlearn.core.paths import run_paths
            from codeunlearn.pipeline import baseline_stage

            record = baseline_stage.unlearn_with_baseline(run_config)
            where = run_paths(run_config).unlearned_dir / record.method
            return f"{record.summary()}; edited model in {where}; the active mask is untouched"
        return _mask_summary(pipeline.unlearn(run_config))

    typer.echo(run_stage(ctx, config, verbose, stage))


def _mask_summary(mask: Any) -> str:
    return (
        f"active mask {mask.digest[:12]}: {len(mask.code_ids)} codes from "
        f"{', '.join(s.name for s in mask.sources) or 'no sources'}"
    )


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def evaluate(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """Held-out NLL for base, codebook, masked and random-mask models and for every model a gradient
    baseline edited (unlearned/<method>/, one row each, named by method), normalised drops, S' sweep."""
    from codeunlearn.pipeline.evaluate import evaluate as evaluate_stage

    report = run_stage(ctx, config, verbose, evaluate_stage)
    typer.echo(report.render())


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def run(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """All stages from one config: prepare, train (reused when unchanged), mine, unlearn, evaluate. With
    unlearn.method=ga, graddiff, npo or rmu: prepare, train, that gradient baseline (see `codeunlearn
    unlearn --help`), evaluate; mining and masking are skipped."""
    import time

    from codeunlearn.pipeline.chain import run_all

    started = time.perf_counter()
    report = run_stage(ctx, config, verbose, run_all)
    typer.echo(report.render())
    typer.echo(f"total {time.perf_counter() - started:.0f} s")


@app.command("translate-eval", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def translate_eval(
    ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION
) -> None:
    """The paper's setting (configs/translation.yaml): train a translation codebook, mine a word topic,
    score BLEU/chrF/METEOR/BERTScore on the topic and the rest for base, codebook, masked models across S'."""
    from codeunlearn.translation import experiment as translation_experiment

    report = run_stage(ctx, config, verbose, translation_experiment.run_translation)
    typer.echo(report.to_markdown())


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def pipeline(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """The tracked pipeline without Prefect: every stage an MLflow run, the codebook and the mask
    registered, `production` moved if the gates pass (the Prefect flow runs the same stages)."""
    from codeunlearn.tracking import stages as tracked

    def stage(run_config: Any) -> dict:
        return tracked.run_pipeline(run_config)

    outcome = run_stage(ctx, config, verbose, stage)
    verdict = (
        "promoted to production"
        if outcome["promoted"]
        else "not promoted: " + "; ".join(outcome["gate_failures"])
    )
    typer.echo(
        f"codebook version {outcome['codebook_version']}, mask version {outcome['mask_version']}: "
        f"forget drop {outcome['forget_drop']:.3f} ({outcome['forget_nats']:+.4f} nats/token), retain drop "
        f"{outcome['retain_drop']:.3f} ({outcome['retain_nats']:+.4f} nats/token); {verdict}"
    )
    typer.echo(f"MLflow run {outcome['mlflow_run_id']} ({outcome['tracking_uri']})")


@app.command()
def sql(
    query: str = typer.Argument(
        ...,
        help="SQL over the views code_counts, code_rates, requests, request_events, masks, mask_codes, "
        "evaluations (see codeunlearn/store/schema.py).",
    ),
    run_dir: Path = RUN_DIR_OPTION,
) -> None:
    """Query the code store (DuckDB over Parquet) of a run directory."""
    from codeunlearn.store.code_store import CodeStore

    if not run_dir.is_dir():
        fail(
            CodeunlearnError(
                f"run directory {run_dir} does not exist: pass --run-dir of a run (e.g. runs/default)"
            )
        )
    try:
        table = CodeStore(run_dir / "store").sql(query)
    except CodeunlearnError as error:
        fail(error)
    typer.echo(table.to_pandas().to_string(index=False) if table.num_rows else "(no rows)")
