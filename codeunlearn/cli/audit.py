"""Reports and certificates: report, verify.

Library modules are imported inside each command: importing torch costs seconds, and `--help`
should not pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from codeunlearn.cli.common import (
    ARTIFACTS_OPTION,
    CERTIFICATE_ARGUMENT,
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
def report(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    mlflow: bool = typer.Option(True, help="Log the report to MLflow and tag the mask version."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Write <run_dir>/report: report.md with tables and plots of everything measured for the active
    mask (evaluation, compare, probe, collateral, ablate) and certificate.json binding the model, data,
    mask and results by sha256; log both to MLflow with the mask version."""

    def stage(run_config: Any) -> dict:
        if mlflow:
            from codeunlearn.tracking import stages as tracked

            return tracked.report(run_config)
        from codeunlearn.evaluation import report as reporting

        written, digest = reporting.publish(run_config, Path(run_config.run_dir) / "report")
        return {"directory": str(written.directory), "certificate_sha256": digest}

    result = run_stage(ctx, config, verbose, stage)
    typer.echo(
        f"report and certificate in {result['directory']} (certificate sha256 {result['certificate_sha256']})"
    )
    if result.get("mask_version"):
        typer.echo(f"logged to MLflow run {result['mlflow_run_id']}, mask version {result['mask_version']}")


@app.command()
def verify(
    certificate_file: Path = CERTIFICATE_ARGUMENT,
    run_dir: Path = RUN_DIR_OPTION,
    artifacts: Path | None = ARTIFACTS_OPTION,
) -> None:
    """Recompute every hash of a deletion certificate against a run directory; exit 1 on any mismatch."""
    import json

    from codeunlearn.evaluation import certificate

    if not certificate_file.is_file():
        fail(CodeunlearnError(f"{certificate_file} does not exist: pass a certificate.json"))
    try:
        payload = json.loads(certificate_file.read_text())
    except json.JSONDecodeError as error:
        fail(CodeunlearnError(f"{certificate_file} is not JSON ({error}): pass a certificate.json"))
    problems = certificate.verify(payload, run_dir, artifacts or certificate_file.parent)
    for problem in problems:
        typer.echo(f"MISMATCH: {problem}")
    if problems:
        raise typer.Exit(code=1)
    typer.echo(f"certificate holds: model, mask, data and {len(payload['artifacts'])} report files match")
