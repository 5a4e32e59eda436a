"""The pipeline and the request processor write one active mask: a request activated while the pipeline
evaluates its candidate is never dropped. Real subprocesses (`codeunlearn pipeline` and `codeunlearn
request process`), the real MLflow SQLite registry and Parquet store, the tiny real model."""

from __future__ import annotations

import time

from codeunlearn.core.config import TopicConfig
from codeunlearn.requests.invariant import check_active_mask
from codeunlearn.requests.processor import Processor
from codeunlearn.requests.queue import RequestStore
from codeunlearn.tracking.tracker import Tracker
from codeunlearn.unlearning.masks import load_mask

from .conftest import Setup


def test_a_request_answered_while_the_pipeline_runs_keeps_its_codes(trained: Setup):
    config = trained.config
    tracker = Tracker(config)
    request = Processor(config, tracker).submit(TopicConfig(label="noun.animal"))
    go_on = trained.root / "go-on"
    # the pipeline builds its candidate on the (empty) active mask, then waits for the test's signal
    pipeline = trained.popen(
        ["-m", "codeunlearn", "pipeline", "-c", str(trained.config_path)],
        {"CODEUNLEARN_FAILPOINTS": f"pipeline-after-propose=wait:{go_on}"},
    )
    _wait_until_proposed(trained, pipeline)

    processed = trained.cli("request", "process")  # meanwhile the request is answered and activated
    assert processed.returncode == 0, processed.stderr[-2000:]
    done = RequestStore(trained.run_dir / "store").get(request.request_id)
    assert done.status == "done"
    go_on.touch()
    _, stderr = pipeline.communicate(timeout=600)

    # the pipeline's candidate was built without the request: activating it would drop the request
    assert pipeline.returncode != 0
    assert "the active mask changed" in stderr and "run the pipeline again" in stderr
    sources = [s.name for s in load_mask(trained.run_dir / "masks" / "active.json").sources]
    assert sources == [request.request_id]
    assert tracker.production_version() == done.mask_version
    assert check_active_mask(config, tracker) == []

    again = trained.cli("pipeline", timeout=600)  # as the message says: built on the new mask now

    assert again.returncode == 0, again.stderr[-2000:]
    sources = [s.name for s in load_mask(trained.run_dir / "masks" / "active.json").sources]
    assert sources == [request.request_id, "noun.food"]
    assert check_active_mask(config, tracker) == []


def _wait_until_proposed(setup: Setup, pipeline) -> None:
    candidate = setup.run_dir / "masks" / "candidate.json"
    deadline = time.monotonic() + 600
    while not candidate.exists():
        assert pipeline.poll() is None, pipeline.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the pipeline never proposed its candidate"
        time.sleep(0.5)
