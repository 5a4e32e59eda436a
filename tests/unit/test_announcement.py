"""The "request added" event's config: the flow it triggers gets the config the request was checked
with (file, overrides, absolute run directory), or refuses with the reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from codeunlearn.core.announcement import announce, announced_config, config_digest
from codeunlearn.core.errors import CodeunlearnError


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"run_dir": "runs/announced", "gates": {"max_retain_drop": 0.05}}))
    return path


def test_the_flow_gets_the_config_the_request_was_checked_with(config_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    announcement = announce(config_file, ["gates.max_retain_drop=0.02", "calibration.grid=[4, 8]"])
    assert set(announcement.resource()) == {"config_path", "overrides", "config_digest"}
    assert all(isinstance(value, str) for value in announcement.resource().values())

    worker_dir = tmp_path / "elsewhere"
    worker_dir.mkdir()
    os.chdir(worker_dir)  # the worker resolves relative paths from its own directory
    config = announced_config(announcement.config_path, announcement.overrides, announcement.config_digest)

    assert config.gates.max_retain_drop == 0.02 and config.calibration.grid == (4, 8)  # overrides kept
    assert Path(config.run_dir) == tmp_path / "runs" / "announced"  # where `request add` ran
    assert config_digest(config) == announcement.config_digest


def test_a_config_edited_after_the_announcement_is_refused(config_file):
    announcement = announce(config_file, [])
    config_file.write_text(yaml.safe_dump({"run_dir": "runs/announced", "gates": {"max_retain_drop": 0.5}}))

    with pytest.raises(CodeunlearnError, match="not the one the request was checked with"):
        announced_config(announcement.config_path, announcement.overrides, announcement.config_digest)
    # without a digest (a scheduled run, a hand-started flow) the file is taken as it is now
    assert announced_config(str(config_file), json.loads(announcement.overrides)).gates.max_retain_drop == 0.5


def test_an_override_with_credentials_is_never_announced(config_file):
    with pytest.raises(
        CodeunlearnError, match="override of tracking.tracking_uri holds credentials"
    ) as refused:
        announce(config_file, ["tracking.tracking_uri=https://ann:s3cret@mlflow.example.com"])
    assert "s3cret" not in str(refused.value)


def test_bad_overrides_in_an_event_are_refused_like_on_the_command_line(config_file):
    with pytest.raises(CodeunlearnError, match="gates.max_retain_drop"):
        announced_config(str(config_file), json.dumps(["gates.max_retain_drop=-1"]))
