"""Credentials in a tracking URI never reach parameters, printed config, error messages or certificates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codeunlearn.cli.main import app
from codeunlearn.core.config import ConfigError, RunConfig, TrackingConfig, load_config
from codeunlearn.core.redaction import is_secret_name, redact_uri
from codeunlearn.evaluation import certificate
from codeunlearn.tracking.tracker import public_params
from codeunlearn.unlearning.masks import Mask, MaskSource, save_mask

SECRET_URI = "https://alice:hunter2@mlflow.example.com:8443/api?token=tok-abc123&experiment=7"
SECRETS = ("alice", "hunter2", "tok-abc123")


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("https://user:secret@host/", "https://***@host/"),
        ("https://user:p%40ss@host:5000/path", "https://***@host:5000/path"),
        ("http://token-only@host", "http://***@host"),
        ("https://host/?token=abc", "https://host/?token=***"),
        ("https://host/?Token=abc&run=3", "https://host/?Token=***&run=3"),
        ("https://host/?api_key=k1&API-KEY=k2&apikey=k3", "https://host/?api_key=***&API-KEY=***&apikey=***"),
        (
            "https://host/?access_token=a&Password=b&auth=c",
            "https://host/?access_token=***&Password=***&auth=***",
        ),
        (
            "s3://bucket/x?X-Amz-Signature=ff00&X-Amz-Date=2026",
            "s3://bucket/x?X-Amz-Signature=***&X-Amz-Date=2026",
        ),
        ("https://host/?sig=s&secret=t&page=2", "https://host/?sig=***&secret=***&page=2"),
        ("databricks://u:p@profile?key=v", "databricks://***@profile?key=***"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://host/?design=a&signal=b", "https://host/?design=a&signal=b"),
    ],
)
def test_credentials_are_replaced_and_the_rest_kept(uri, expected):
    assert redact_uri(uri) == expected
    assert redact_uri(expected) == expected  # redacting twice changes nothing


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "sqlite:////tmp/state/mlflow.db",
        "sqlite:///state/a@b/mlflow.db",
        "file:///home/me/mlruns?token=not-a-query",
        "/home/user:x@y/mlruns",
        "state/mlartifacts",
    ],
)
def test_paths_and_local_uris_are_untouched(uri):
    assert redact_uri(uri) == uri


def test_secret_names_are_recognised_in_any_case_and_spelling():
    for name in (
        "token",
        "TOKEN",
        "x-auth",
        "client_secret",
        "sig",
        "access_token",
        "api_key",
        "AccessToken",
    ):
        assert is_secret_name(name), name
    for name in ("experiment", "run_id", "design", "signal", "page"):
        assert not is_secret_name(name), name


def _secret_config(**tracking: str) -> RunConfig:
    return RunConfig(tracking=TrackingConfig(tracking_uri=SECRET_URI, **tracking))


def test_public_params_hold_no_credential():
    params = public_params(_secret_config(artifact_root="s3://key:pw@bucket/art?sig=zzz"))
    flat = json.dumps(params)
    for secret in (*SECRETS, "key:pw", "zzz"):
        assert secret not in flat
    assert params["tracking.tracking_uri"] == (
        "https://***@mlflow.example.com:8443/api?token=***&experiment=7"
    )
    assert params["tracking.artifact_root"] == "s3://***@bucket/art?sig=***"


def test_a_certificate_holds_no_credential(tmp_path: Path):
    config = RunConfig(run_dir=str(tmp_path), tracking=TrackingConfig(tracking_uri=SECRET_URI))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "codebook_config.json").write_text("{}")
    mask = Mask(n_codes=16, sources=(MaskSource(name="noun.food", code_ids=(1, 2, 3), rule="enrichment"),))
    (tmp_path / "masks").mkdir()
    save_mask(mask, tmp_path / "masks" / "active.json")
    nll = {
        name: {"forget": forget, "retain": 4.0}
        for name, forget in (("base", 6.0), ("codebook", 5.0), ("masked", 5.8))
    }
    built = certificate.build(
        config,
        {"mask_digest": mask.digest, "nll": nll},
        artifacts={},
        registry={"tracking_uri": config.tracking.resolved_tracking_uri(), "mask_version": "3"},
    )
    text = json.dumps(built)
    for secret in SECRETS:
        assert secret not in text
    assert built["registry"]["tracking_uri"].startswith("https://***@mlflow.example.com:8443/")
    assert built["registry"]["mask_version"] == "3"


def test_config_show_prints_no_credential():
    result = CliRunner().invoke(app, ["config", "show", f"tracking.tracking_uri={SECRET_URI}"])
    assert result.exit_code == 0, result.output
    assert "https://***@mlflow.example.com:8443/api?token=***&experiment=7" in result.stdout
    for secret in SECRETS:
        assert secret not in result.output


def test_the_real_uri_is_kept_for_connecting():
    config = load_config(None, [f"tracking.tracking_uri={SECRET_URI}"])
    assert config.tracking.resolved_tracking_uri() == SECRET_URI


def test_a_refused_uri_is_named_without_its_credential():
    with pytest.raises(ConfigError, match="is not a URI") as refused:
        TrackingConfig(tracking_uri="https://alice:hunter2@host/ x").validate()
    assert "hunter2" not in str(refused.value) and "alice" not in str(refused.value)


def test_the_config_a_run_directory_keeps_holds_no_credentials(tmp_path):
    from codeunlearn.core.config import load_config, save_config

    config = load_config(None, ["tracking.tracking_uri=https://ann:s3cret@mlflow.example.com/?token=abc"])
    save_config(config, tmp_path / "config.yaml")

    written = (tmp_path / "config.yaml").read_text()
    assert "s3cret" not in written and "abc" not in written
    kept = load_config(tmp_path / "config.yaml")
    assert kept.tracking.tracking_uri.startswith("https://***@mlflow.example.com")
    assert kept.model == config.model and kept.gates == config.gates  # the rest as it was
