"""`codeunlearn config show`: the resolved config as commented YAML, and bad input refused cleanly."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from codeunlearn.cli.main import app
from codeunlearn.core.config import config_to_dict, load_config

DEFAULT = Path(__file__).parents[2] / "configs" / "default.yaml"


def show(*args: str):
    return CliRunner().invoke(app, ["config", "show", "-c", str(DEFAULT), *args])


def test_show_prints_the_file_as_yaml_with_each_fields_doc():
    result = show()
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == config_to_dict(load_config(DEFAULT))
    assert "# the codebook bottleneck and where it sits\nbottleneck:\n" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("  n_codes:"))
    assert line.split("#")[1].strip() == "codes in the codebook"


def test_an_override_changes_the_shown_value_and_only_it():
    shown = yaml.safe_load(show("train.lr=3e-4", "--unlearn.baseline.epochs=2").stdout)
    expected = config_to_dict(load_config(DEFAULT))
    assert shown["train"]["lr"] == 3e-4 != expected["train"]["lr"]
    assert shown["unlearn"]["baseline"]["epochs"] == 2
    expected["train"]["lr"], expected["unlearn"]["baseline"]["epochs"] = 3e-4, 2
    assert shown == expected


def test_a_bad_key_names_the_closest_and_exits_nonzero():
    result = show("trian.lr=3e-4")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "error: unknown config key trian; did you mean train?" in result.stderr


def test_a_bad_value_or_file_prints_the_error_and_exits_nonzero(tmp_path):
    result = show("train.lr=fast")
    assert result.exit_code == 2
    assert "error: train.lr='fast' is a str, but it must be a float" in result.stderr
    missing = CliRunner().invoke(app, ["config", "show", "-c", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2
    assert "none.yaml does not exist: pass the path of a YAML file" in missing.stderr
