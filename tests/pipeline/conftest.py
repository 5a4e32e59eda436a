"""Fixtures for the tracked pipeline: tiny real model and corpus, a real Prefect API (the test harness,
one per session), a real MLflow SQLite store per test, and CLI subprocess helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from codeunlearn.core.config import RunConfig, load_config

from .setup_files import tiny_config, write_config, write_corpus, write_tiny_model

REPO = Path(__file__).resolve().parents[2]
# The library's log lines join the Prefect flow-run logs (as flows/__init__.py arranges for deployments),
# so the privacy test reads them from the API too. Set before anything imports Prefect.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "codeunlearn")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("assets")
    return write_tiny_model(root / "tiny-llama"), write_corpus(root / "corpus.parquet")


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect API for the session; yields its URL so subprocesses can use it too."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield PREFECT_API_URL.value()


@dataclass
class Setup:
    root: Path
    config_path: Path

    @property
    def config(self) -> RunConfig:
        return load_config(self.config_path)

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
        """`codeunlearn ARGS -c CONFIG` in a subprocess, as a user runs it."""
        return self.run(["-m", "codeunlearn", *args, "-c", str(self.config_path)], env, timeout)

    def flow(self, module: str, env: dict[str, str] | None = None, timeout: float = 300):
        """`python -m flows.MODULE CONFIG` in a subprocess (needs PREFECT_API_URL in env)."""
        return self.run(["-m", f"flows.{module}", str(self.config_path)], env, timeout)

    def popen(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "CODEUNLEARN_PROGRESS": "0", **(env or {})},
        )

    def run(self, args: list[str], env: dict[str, str] | None, timeout: float) -> subprocess.CompletedProcess:
        process = self.popen(args, env)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        finally:
            process.kill()
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture
def make_setup(tmp_path, tiny_assets):
    def make(name: str = "s", **sections: dict) -> Setup:
        root = tmp_path / name
        root.mkdir()
        model_dir, corpus = tiny_assets
        path = write_config(root / "config.yaml", tiny_config(root, model_dir, corpus, **sections))
        return Setup(root, path)

    return make


@pytest.fixture
def trained(make_setup) -> Setup:
    """Data prepared and a codebook trained and registered (version 1); no mask yet."""
    from codeunlearn.tracking import stages as tracked

    setup = make_setup()
    config = setup.config
    with tracked.pipeline_run(config) as parent:
        tracked.prepare(config, parent)
        tracked.train(config, parent)
    return setup
