"""The `codeunlearn` command line: one command per stage, plus `run` for all of them.

Every command takes `--config FILE` and any number of `section.key=value` overrides
(also accepted as `--section.key=value`), checked against the typed config before work starts.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from codeunlearn.errors import CodeunlearnError

app = typer.Typer(
    help="Make a language model forget a topic without gradient steps, through a codebook bottleneck.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
OVERRIDES_HELP = (
    "Any number of section.key=value overrides may follow, e.g. train.lr=3e-4 topic.label=noun.animal "
    "run_dir=runs/animal; sections: model, data, topic, bottleneck, train, mining, eval "
    "(see configs/default.yaml)."
)
CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML config file (see configs/).")
RUN_DIR_OPTION = typer.Option(Path("runs/default"), help="Run directory holding store/.")
VERBOSE_OPTION = typer.Option(False, "--verbose", "-v", help="Log per-batch detail (DEBUG).")


def _load(ctx: typer.Context, config: Path | None, verbose: bool):
    from codeunlearn.config import load_config

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return load_config(config, ctx.args)


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


def _run_stage(ctx: typer.Context, config: Path | None, verbose: bool, stage: Callable[[Any], Any]) -> Any:
    """Load the config and run one library stage; bad input becomes a message and exit code 2."""
    try:
        return stage(_load(ctx, config, verbose))
    except CodeunlearnError as error:
        _fail(error)


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def prepare(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """Load the corpus, split it train/test, and build the topic's forget/control/retain splits."""
    from codeunlearn import pipeline

    splits = _run_stage(ctx, config, verbose, pipeline.prepare)
    for name, entry in splits.manifest["splits"].items():
        typer.echo(f"{name:14s} {entry['count']:7d} examples  sha256 {entry['content_hash'][:16]}")


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def train(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """Train the codebook bottleneck into the base model once, and save the codebook model."""
    from codeunlearn import pipeline

    result = _run_stage(ctx, config, verbose, pipeline.train_codebook)
    typer.echo(
        f"trained {result.steps} steps, {result.tokens} tokens in {result.elapsed_s:.0f} s: "
        f"loss {result.final_loss:.3f}, reconstruction {result.final_recon:.3f}, "
        f"dead codes {result.dead_share:.1%}"
    )


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def mine(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """Count code firings on the forget, control and retain sets and select the topic's codes."""
    from codeunlearn import pipeline

    selected = _run_stage(ctx, config, verbose, pipeline.mine)
    typer.echo(f"selected {len(selected.code_ids)} codes ({selected.n_eligible} eligible) by {selected.rule}")


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def unlearn(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    remove: str | None = typer.Option(None, help="Undo: remove this topic's codes from the active mask."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Mask the selected codes (union with the active mask); no gradient steps. --remove undoes one topic."""
    from codeunlearn import pipeline

    def stage(run_config: Any) -> Any:
        return pipeline.forget_source(run_config, remove) if remove else pipeline.unlearn(run_config)

    mask = _run_stage(ctx, config, verbose, stage)
    typer.echo(
        f"active mask {mask.digest[:12]}: {len(mask.code_ids)} codes from "
        f"{', '.join(s.name for s in mask.sources) or 'no sources'}"
    )


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def evaluate(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """Held-out NLL for base, codebook, masked and random-mask models, normalised drops, S' sweep."""
    from codeunlearn import pipeline

    report = _run_stage(ctx, config, verbose, pipeline.evaluate)
    typer.echo(pipeline.render_report(report))


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def run(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """All stages from one config: prepare, train (reused when unchanged), mine, unlearn, evaluate."""
    import time

    from codeunlearn import pipeline

    started = time.perf_counter()
    report = _run_stage(ctx, config, verbose, pipeline.run_all)
    typer.echo(pipeline.render_report(report))
    typer.echo(f"total {time.perf_counter() - started:.0f} s")


@app.command()
def sql(
    query: str = typer.Argument(..., help="SQL over the views code_counts and code_rates."),
    run_dir: Path = RUN_DIR_OPTION,
) -> None:
    """Query the code store (DuckDB over Parquet) of a run directory."""
    from codeunlearn.store import CodeStore

    try:
        table = CodeStore(run_dir / "store").sql(query)
    except CodeunlearnError as error:
        _fail(error)
    typer.echo(table.to_string(preview_cols=20) if hasattr(table, "to_string") else str(table))


if __name__ == "__main__":
    app()
