"""`codeunlearn config`: inspect the config a command would run with, before any work starts."""

from __future__ import annotations

from pathlib import Path

import typer

from codeunlearn.core.errors import CodeunlearnError

config_app = typer.Typer(help="Inspect run configs: show the resolved config.", no_args_is_help=True)

# As in codeunlearn.cli.main, which registers this sub-app and so cannot be imported from here.
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML config file (see configs/).")
OVERRIDES_HELP = (
    "Any number of section.key=value overrides may follow (also as --section.key=value), e.g. "
    "train.lr=3e-4 topic.label=noun.animal; they are checked against the config's types."
)


@config_app.command("show", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def show(ctx: typer.Context, config: Path | None = CONFIG_OPTION) -> None:
    """Print the resolved config as YAML, each field's one-line doc as a comment beside it.

    The file's values replace the defaults and the overrides replace both; a bad file, key or value
    prints the error and exits 2.
    """
    from codeunlearn.core.config import commented_yaml, load_config  # deferred: --help loads no config

    try:
        run_config = load_config(config, ctx.args)
    except CodeunlearnError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(commented_yaml(run_config), nl=False)
