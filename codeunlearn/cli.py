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
    "run_dir=runs/animal; sections: model, data, topic, bottleneck, train, mining, eval, tracking, gates "
    "(see configs/default.yaml)."
)
CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML config file (see configs/).")
RUN_DIR_OPTION = typer.Option(Path("runs/default"), help="Run directory holding store/.")
EXAMPLES_OPTION = typer.Option(None, help="A .jsonl/.csv/.parquet file of the texts to forget.")
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


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def pipeline(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """The tracked pipeline without Prefect: every stage an MLflow run, the codebook and the mask
    registered, `production` moved if the gates pass (the Prefect flow runs the same stages)."""
    from codeunlearn import tracked

    def stage(run_config: Any) -> dict:
        return tracked.run_pipeline(run_config)

    outcome = _run_stage(ctx, config, verbose, stage)
    verdict = (
        "promoted to production"
        if outcome["promoted"]
        else "not promoted: " + "; ".join(outcome["gate_failures"])
    )
    typer.echo(
        f"codebook version {outcome['codebook_version']}, mask version {outcome['mask_version']}: "
        f"forget drop {outcome['forget_drop']:.3f}, retain drop {outcome['retain_drop']:.3f}; {verdict}"
    )
    typer.echo(f"MLflow run {outcome['mlflow_run_id']} ({outcome['tracking_uri']})")


@app.command()
def sql(
    query: str = typer.Argument(
        ...,
        help="SQL over the views code_counts, code_rates, requests, request_events, masks, mask_codes, "
        "evaluations (see codeunlearn/schema.py).",
    ),
    run_dir: Path = RUN_DIR_OPTION,
) -> None:
    """Query the code store (DuckDB over Parquet) of a run directory."""
    from codeunlearn.store import CodeStore

    try:
        table = CodeStore(run_dir / "store").sql(query)
    except CodeunlearnError as error:
        _fail(error)
    typer.echo(table.to_pandas().to_string(index=False) if table.num_rows else "(no rows)")


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def compare(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    methods: str = typer.Option("ga,graddiff,npo", help="Gradient baselines to run (ga, graddiff, npo)."),
    forget_limit: int = typer.Option(200, help="Forget examples the baselines unlearn (trained-on first)."),
    epochs: int = typer.Option(10, help="Baseline epochs over the forget examples (NPO's usual budget)."),
    lr: float = typer.Option(1e-5, help="Baseline learning rate (AdamW)."),
    batch_size: int = typer.Option(8, help="Baseline batch size."),
    relearn: str = typer.Option("", help="Relearning attack: comma-separated step counts, e.g. 5,10,20."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Masking against gradient ascent, gradient difference and NPO on the same codebook model and
    evaluation: forget/retain drops, membership-inference AUC, wall-clock. Needs `codeunlearn run` first."""
    import json

    from codeunlearn import comparison
    from codeunlearn.baselines import BaselineConfig

    def stage(run_config: Any) -> Path:
        baseline = BaselineConfig(lr=lr, epochs=epochs, batch_size=batch_size)
        baseline.validate()
        chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
        for method in chosen:
            BaselineConfig(method=method).validate()
        try:
            steps = tuple(int(n) for n in relearn.split(",") if n.strip())
        except ValueError:
            raise CodeunlearnError(f"--relearn={relearn!r}: give step counts like 5,10,20") from None
        scores = comparison.compare(run_config, chosen, baseline, forget_limit, steps)
        table = comparison.render(scores)
        if relearning := comparison.render_relearning(scores):
            table += (
                "\n\nRelearning attack: forget NLL after N steps (recovery toward the codebook model)\n\n"
                + relearning
            )
        typer.echo(table)
        out = Path(run_config.run_dir) / "compare"
        out.mkdir(parents=True, exist_ok=True)
        (out / "methods.md").write_text(table + "\n")
        (out / "methods.json").write_text(json.dumps(comparison.to_json(scores), indent=2))
        return out

    typer.echo(f"written to {_run_stage(ctx, config, verbose, stage)}")


request_app = typer.Typer(help="Deletion requests: add, list, show, process, revert.", no_args_is_help=True)
app.add_typer(request_app, name="request")


def _request_store(run_config: Any):
    from codeunlearn.requests import RequestStore

    return RequestStore(Path(run_config.run_dir) / "store")


def _tracker(run_config: Any):
    from codeunlearn.tracking import Tracker

    return Tracker(run_config)


@request_app.command("add", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def request_add(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    label: str | None = typer.Option(None, help="Forget every example with this label (e.g. noun.food)."),
    keywords: str | None = typer.Option(None, help="Comma-separated words; examples containing any."),
    regex: str | None = typer.Option(None, help="Examples matching this regular expression."),
    examples: Path | None = EXAMPLES_OPTION,
    model_version: str = typer.Option("", help="Codebook model version (default: the latest)."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Record a pending deletion request after checking its topic and codebook version."""
    from codeunlearn.config import TopicConfig

    given = {
        k: v
        for k, v in {"label": label, "keywords": keywords, "regex": regex, "examples": examples}.items()
        if v
    }
    if len(given) != 1:
        _fail(
            CodeunlearnError(
                f"give exactly one of --label, --keywords, --regex, --examples; got {list(given) or 'none'}"
            )
        )
    topic = TopicConfig(
        label=label,
        keywords=tuple(w.strip() for w in keywords.split(",") if w.strip()) if keywords else (),
        regex=regex,
        examples_file=str(examples) if examples else None,
    )
    from codeunlearn.deletion import Processor

    request = _run_stage(
        ctx, config, verbose, lambda c: Processor(c, _tracker(c)).submit(topic, model_version)
    )
    typer.echo(
        f"{request.request_id} pending (codebook {request.model_name} version {request.model_version})"
    )
    _announce(request.request_id, config)


def _announce(request_id: str, config: Path | None) -> None:
    """Emit the `codeunlearn.request.added` Prefect event that triggers processing, if a server is set."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        return
    try:
        from prefect.events import emit_event
    except ImportError:
        return
    emit_event(
        event="codeunlearn.request.added",
        resource={
            "prefect.resource.id": f"codeunlearn.request.{request_id}",
            "request_id": request_id,
            "config_path": str(config.resolve()) if config else "configs/default.yaml",
        },
    )
    typer.echo(f"announced {request_id} to the Prefect server")


@request_app.command("list", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def request_list(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    status: str | None = typer.Option(None, help="Only requests with this status."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """List deletion requests and their status."""
    requests = _run_stage(ctx, config, verbose, lambda c: _request_store(c).list((status,) if status else ()))
    for r in requests:
        typer.echo(
            f"{r.request_id}  {r.status:10s} {r.topic_kind:13s} codebook v{r.model_version} "
            f"mask v{r.mask_version or '-'}  {r.submitted_at:%Y-%m-%d %H:%M:%S}  {r.error[:80]}"
        )
    if not requests:
        typer.echo("no requests")


@request_app.command("show", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def request_show(
    ctx: typer.Context,
    request_id: str = typer.Argument(..., help="The request id (req-...)."),
    config: Path | None = CONFIG_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Show one request whole, error included."""
    from dataclasses import asdict

    request = _run_stage(ctx, config, verbose, lambda c: _request_store(c).get(request_id))
    for key, value in asdict(request).items():
        typer.echo(f"{key:14s} {value}")


@request_app.command("process", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def request_process(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    wait: float = typer.Option(600.0, help="Seconds to wait for another processor to finish."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Process every pending request now, without Prefect (the scheduled deployment does the same)."""
    from codeunlearn.deletion import process_open_requests

    done = _run_stage(ctx, config, verbose, lambda c: process_open_requests(c, _tracker(c), wait))
    for r in done:
        typer.echo(f"{r.request_id}  {r.status:10s} mask v{r.mask_version or '-'}  {r.error}")
    if not done:
        typer.echo("no pending requests")


@request_app.command("revert", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def request_revert(
    ctx: typer.Context,
    request_id: str = typer.Argument(..., help="The done request whose codes to unmask."),
    config: Path | None = CONFIG_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Undo one request: remove its codes from the active mask and register that as a new version."""
    from codeunlearn.deletion import revert_request

    request = _run_stage(ctx, config, verbose, lambda c: revert_request(c, _tracker(c), request_id))
    typer.echo(f"{request.request_id} reverted: mask version {request.mask_version} is production")


if __name__ == "__main__":
    app()
