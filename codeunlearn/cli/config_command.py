"""`codeunlearn config`: inspect the config a command would run with, before any work starts."""

from __future__ import annotations

from pathlib import Path

import typer

from codeunlearn.cli.common import CONFIG_OPTION, EXTRA, OVERRIDES_HELP, fail
from codeunlearn.core.errors import CodeunlearnError

config_app = typer.Typer(help="Inspect run configs: show the resolved config.", no_args_is_help=True)


@config_app.command("show", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def show(ctx: typer.Context, config: Path | None = CONFIG_OPTION) -> None:
    """Print the resolved config as YAML, each field's one-line doc as a comment beside it.

    The file's values replace the defaults and the overrides replace both; a bad file, key or value
    prints the error and exits 2. Credentials in the tracking URIs are shown as `***`.
    """
    import dataclasses

    # deferred: --help loads no config
    from codeunlearn.core.config import commented_yaml, load_config

    try:
        run_config = load_config(config, ctx.args)
    except CodeunlearnError as error:
        fail(error)
    shown = dataclasses.replace(run_config, tracking=run_config.tracking.redacted())
    typer.echo(commented_yaml(shown), nl=False)
