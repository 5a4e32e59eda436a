"""The raw text of a forget set never reaches MLflow (database, artifacts) or the run logs (Prefect
flow-run logs and the processes' output); hashes and counts do."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow.parquet as pq

from codeunlearn.requests.queue import RequestStore

from .conftest import Setup

SECRET = "Quillivant Marrowgate"
SENTENCES = [
    f"{SECRET} kept a ledger of seventeen violet herons in 1911.",
    f"The herons of {SECRET} were counted each spring at dawn.",
    f"{SECRET} sold the ledger to a collector from Lisbon.",
    f"Nobody outside the village ever read what {SECRET} wrote.",
    f"In the margins {SECRET} drew maps of the salt marsh.",
]


def prefect_logs(flow_run_ids: list[str]) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def read():
        async with get_client() as client:
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)))
            return "\n".join(log.message for log in logs)

    return asyncio.run(read())


def flow_run_ids() -> list[str]:
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return [str(run.id) for run in await client.read_flow_runs()]

    return asyncio.run(read())


def files_containing(root: Path, needle: str) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and needle.encode() in path.read_bytes()]


def test_forget_text_never_reaches_mlflow_or_logs(make_setup, prefect_api: str, tmp_path: Path):
    examples = tmp_path / "private.jsonl"
    examples.write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES))
    setup: Setup = make_setup(topic={"label": None, "examples_file": str(examples)})
    env = {"PREFECT_API_URL": prefect_api}

    pipeline = setup.flow("pipeline", env=env)
    assert pipeline.returncode == 0, pipeline.stderr[-3000:]
    added = setup.cli("request", "add", "--examples", str(examples))
    assert added.returncode == 0, added.stderr[-2000:]
    processed = setup.flow("deletion_requests", env=env)
    assert processed.returncode == 0, processed.stderr[-3000:]

    # The sentences were really used: they are the forget set, kept in the run directory only.
    forget = (
        pq.read_table(setup.run_dir / "data" / "topic" / "forget_train.parquet").column("text").to_pylist()
    )
    assert forget and all(text in SENTENCES for text in forget)
    (request,) = RequestStore(setup.run_dir / "store").list()
    assert request.status in ("done", "rejected"), request.error
    assert files_containing(setup.run_dir / "data", SECRET)  # the scan below would find them

    assert files_containing(setup.state_dir, SECRET) == []  # mlflow.db and every artifact file
    logs = prefect_logs(flow_run_ids())
    assert f"request {request.request_id}" in logs  # the library's own log lines are in there
    assert SECRET not in logs
    for output in (pipeline, added, processed):
        assert SECRET not in output.stdout + output.stderr
        assert str(examples) not in output.stdout + output.stderr  # not even the file's path
    assert str(examples) not in "".join(
        p.read_bytes().decode("latin-1") for p in setup.state_dir.rglob("*") if p.is_file()
    )
