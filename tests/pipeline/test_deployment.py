"""prefect.yaml for real: a local Prefect server, `prefect deploy --all`, a process worker; adding a
request emits the event whose trigger runs process-deletion-requests, which answers the request and
registers a new masked version. Bounded in time; the server and worker are stopped afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeunlearn.requests.queue import RequestStore
from codeunlearn.tracking.tracker import Tracker

from .conftest import REPO, Setup

PREFECT = [sys.executable, "-m", "prefect"]


class Services:
    """Long-running processes (server, worker), each in its own session so their children stop too."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env, self.processes = logs, env, []

    def start(self, args: list[str], name: str) -> None:
        with (self.logs / f"{name}.log").open("w") as log:
            process = subprocess.Popen(
                args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes.append(process)

    def run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(args, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{args}: {result.stdout[-1500:]} {result.stderr[-1500:]}"
        return result

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()[-3000:]

    def stop(self) -> None:
        for process in self.processes:
            with _quietly():
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with _quietly():
                    os.killpg(process.pid, signal.SIGKILL)


class _quietly:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, traceback) -> bool:
        return kind is ProcessLookupError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[Services]:
    """`prefect server start` on a free port with its own PREFECT_HOME; stopped after the test."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "CODEUNLEARN_PROGRESS": "0",
    }
    services = Services(tmp_path, env)
    services.start([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], "server")
    try:
        wait_for(lambda: healthy(env["PREFECT_API_URL"]), 120, "the Prefect server")
        yield services
    finally:
        services.stop()


def test_request_added_triggers_the_deployed_flow(trained: Setup, prefect_server: Services):
    services = prefect_server
    services.run([*PREFECT, "work-pool", "create", "local", "--type", "process"])
    deployed = services.run([*PREFECT, "--no-prompt", "deploy", "--all"], timeout=180)
    assert "process-deletion-requests" in deployed.stdout
    services.start([*PREFECT, "worker", "start", "--pool", "local"], "worker")

    added = services.run(
        [
            sys.executable,
            "-m",
            "codeunlearn",
            "request",
            "add",
            "--label",
            "noun.animal",
            "-c",
            str(trained.config_path),
            "calibration.grid=[4]",  # the config file says [8]: the event must carry the override
        ]
    )
    assert "announced" in added.stdout
    request_id = added.stdout.split()[0]
    store = RequestStore(trained.run_dir / "store")

    try:
        wait_for(lambda: store.get(request_id).status not in ("pending", "processing"), 240, "the request")
    except AssertionError as error:
        raise AssertionError(
            f"worker log:\n{services.log('worker')}\nserver log:\n{services.log('server')}"
        ) from error
    done = store.get(request_id)
    assert done.status == "done", done.error
    assert done.chosen_n_select == 4  # answered on the config it was added with
    tracker = Tracker(trained.config)
    assert tracker.production_version() == done.mask_version
    version = tracker.client.get_model_version(tracker.masked_name, done.mask_version)
    assert version.tags["request_key"] == request_id
    completed = services.run([sys.executable, "-c", COMPLETED_RUNS]).stdout.split()
    assert "process-deletion-requests" in completed  # a deployment run, started by the event trigger


COMPLETED_RUNS = """
import asyncio
from prefect.client.orchestration import get_client

async def main():
    async with get_client() as client:
        for run in await client.read_flow_runs():
            if run.deployment_id and run.state.is_completed():
                print((await client.read_deployment(run.deployment_id)).name)

asyncio.run(main())
"""
