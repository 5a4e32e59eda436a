"""The `codeunlearn` app, its shared options, and how a command loads its config and reports bad input."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from codeunlearn.core.errors import CodeunlearnError

app = typer.Typer(
    help="Make a language model forget a topic without gradient steps, through a codebook bottleneck.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
OVERRIDES_HELP = (
    "Any number of section.key=value overrides may follow, e.g. train.lr=3e-4 topic.label=noun.animal "
    "run_dir=runs/animal; sections: model, data, topic, bottleneck, train, mining, calibration, unlearn, "
    "eval, translation, tracking, gates, sweep (see configs/default.yaml)."
)
CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML config file (see configs/).")
RUN_DIR_OPTION = typer.Option(Path("runs/default"), help="Run directory holding store/.")
EXAMPLES_OPTION = typer.Option(None, help="A .jsonl/.csv/.parquet file of the texts to forget.")
ABLATION_SPEC_OPTION = typer.Option(Path("configs/ablation.yaml"), help="YAML with `axes:` and `overrides:`.")
CERTIFICATE_ARGUMENT = typer.Argument(..., help="A certificate.json written by `codeunlearn report`.")
ARTIFACTS_OPTION = typer.Option(None, help="Directory of the report's files (default: the certificate's).")
OUT_OPTION = typer.Option(None, help="Output directory (default: under the run directory).")
VERBOSE_OPTION = typer.Option(False, "--verbose", "-v", help="Log per-batch detail (DEBUG).")


def load_config_from(ctx: typer.Context, config: Path | None, verbose: bool):
    from codeunlearn.core.config import load_config

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return load_config(config, ctx.args)


def fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


def run_stage(ctx: typer.Context, config: Path | None, verbose: bool, stage: Callable[[Any], Any]) -> Any:
    """Load the config and run one library stage; bad input becomes a message and exit code 2."""
    try:
        return stage(load_config_from(ctx, config, verbose))
    except CodeunlearnError as error:
        fail(error)
