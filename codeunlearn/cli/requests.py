"""Deletion requests: add, list, show, process, revert, retry; `doctor` checks the active mask.

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
    EXAMPLES_OPTION,
    EXTRA,
    OVERRIDES_HELP,
    VERBOSE_OPTION,
    app,
    fail,
    run_stage,
)
from codeunlearn.core.errors import CodeunlearnError

request_app = typer.Typer(
    help="Deletion requests: add, list, show, process, revert, retry.", no_args_is_help=True
)
app.add_typer(request_app, name="request")


def _request_store(run_config: Any):
    from codeunlearn.requests.queue import RequestStore

    return RequestStore(Path(run_config.run_dir) / "store")


def _tracker(run_config: Any):
    from codeunlearn.tracking.tracker import Tracker

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
    from codeunlearn.core.config import TopicConfig

    given = {
        k: v
        for k, v in {"label": label, "keywords": keywords, "regex": regex, "examples": examples}.items()
        if v
    }
    if len(given) != 1:
        fail(
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
    from codeunlearn.requests.processor import Processor

    request = run_stage(
        ctx, config, verbose, lambda c: Processor(c, _tracker(c)).submit(topic, model_version)
    )
    typer.echo(
        f"{request.request_id} pending (codebook {request.model_name} version {request.model_version})"
    )
    _announce(request.request_id, config, list(ctx.args))


def _announce(request_id: str, config: Path | None, overrides: list[str]) -> None:
    """Emit the `codeunlearn.request.added` Prefect event that triggers processing, if a server is set:
    it carries the config file, the overrides and the effective config's digest
    (codeunlearn.core.announcement), so the triggered flow runs on the config the request was checked
    with, or refuses to."""

    if not os.environ.get("PREFECT_API_URL"):
        return
    try:
        from prefect.events import emit_event
    except ImportError:
        return
    from codeunlearn.core.announcement import announce

    try:
        announcement = announce(config, overrides)
    except CodeunlearnError as error:
        typer.echo(f"not announced ({error}); the next scheduled run processes {request_id}", err=True)
        return
    emit_event(
        event="codeunlearn.request.added",
        resource={
            "prefect.resource.id": f"codeunlearn.request.{request_id}",
            "request_id": request_id,
            **announcement.resource(),
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
    requests = run_stage(ctx, config, verbose, lambda c: _request_store(c).list((status,) if status else ()))
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
    """Show one request whole, error included, and how it was answered: the S' calibration chose, every
    S' it scored on the validation split, and the held-out test result beside the chosen one's."""
    from dataclasses import fields

    from codeunlearn.requests.answer import ANSWER_FIELDS, describe

    request = run_stage(ctx, config, verbose, lambda c: _request_store(c).get(request_id))
    for field in fields(request):
        if field.name not in ANSWER_FIELDS:
            typer.echo(f"{field.name:14s} {getattr(request, field.name)}")
    for line in describe(request):
        typer.echo(line)


@request_app.command("process", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def request_process(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    wait: float = typer.Option(600.0, help="Seconds to wait for another processor to finish."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Process every pending request now, without Prefect (the scheduled deployment does the same)."""
    from codeunlearn.requests.service import process_open_requests

    done = run_stage(ctx, config, verbose, lambda c: process_open_requests(c, _tracker(c), wait))
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
    """Undo one request: remove its codes from the active mask, check the model without them clears the
    retain gate on the request's test split, register that mask and promote it. Exit 1 when the revert
    is refused (the request stays done) or is left for a retry (it stays reverting, and the next
    `request process` or `request revert` finishes it)."""
    from codeunlearn.requests.service import revert_request

    def stage(run_config: Any) -> Any:
        _request_store(run_config).get(request_id)  # an unknown id is refused before the registry opens
        return revert_request(run_config, _tracker(run_config), request_id)

    request = run_stage(ctx, config, verbose, stage)
    if request.status != "reverted":
        typer.echo(f"{request.request_id} not reverted, it is {request.status}: {request.error}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{request.request_id} reverted: mask version {request.mask_version} is production")


@request_app.command("retry", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def request_retry(
    ctx: typer.Context,
    request_id: str = typer.Argument(..., help="The failed request to process again."),
    config: Path | None = CONFIG_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Put a failed request back to pending, its attempts counted from zero again."""
    request = run_stage(ctx, config, verbose, lambda c: _request_store(c).retry(request_id))
    typer.echo(f"{request.request_id} pending again (the next `codeunlearn request process` takes it)")


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def doctor(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    registry: bool = typer.Option(True, help="Also check that `production` holds the active mask."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Check the active mask is over the run's codebook and exactly the done requests' codes plus the
    topics the pipeline activated since the codebook was last trained (and the `production` version's
    mask): prints what is wrong (exit 1) or ok, after notes on requests being carried to a retrained
    codebook."""
    from codeunlearn.requests.invariant import diagnose

    found = run_stage(ctx, config, verbose, lambda c: diagnose(c, _tracker(c) if registry else None))
    for note in found.notes:
        typer.echo(f"note: {note}")
    for problem in found.problems:
        typer.echo(problem)
    if found.problems:
        raise typer.Exit(code=1)
    typer.echo("ok")


if __name__ == "__main__":
    app()
