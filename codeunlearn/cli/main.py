"""The `codeunlearn` command line: one command per stage, plus `run` for all of them.

Every command takes `--config FILE` and any number of `section.key=value` overrides
(also accepted as `--section.key=value`), checked against the typed config before work starts.
"""

# Importing a command module registers its commands, in this order in `--help`.
from codeunlearn.cli import stages, experiments, audit, requests, sweep  # noqa: F401, I001
from codeunlearn.cli.common import app
from codeunlearn.cli.config_command import config_app

app.add_typer(config_app, name="config")

__all__ = ["app"]
