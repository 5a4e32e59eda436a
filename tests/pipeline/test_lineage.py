"""A codebook retrained in the same run directory starts a new lineage of the active mask: the old
mask is archived, the active one starts empty, and the deletions answered on the old codebook are
carried to the new one, production keeping the old codebook's version until they are answered again.
Real tiny model, real MLflow SQLite registry, real DuckDB/Parquet store."""

from __future__ import annotations

from dataclasses import replace

import pytest

from codeunlearn.core.config import TopicConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.model.surgery import weights_hash
from codeunlearn.requests.invariant import Diagnosis, diagnose
from codeunlearn.requests.processor import Processor
from codeunlearn.requests.queue import RequestStore
from codeunlearn.requests.service import process_open_requests
from codeunlearn.tracking import stages as tracked
from codeunlearn.tracking.tracker import Tracker
from codeunlearn.unlearning.active_mask import read_active, read_journal
from codeunlearn.unlearning.masks import Mask, load_mask, mask_notes, save_mask

from .conftest import Setup


def test_retraining_carries_the_answered_requests_to_the_new_codebook(trained: Setup):
    config = trained.config
    tracker = Tracker(config)
    processor = Processor(config, tracker)
    old_ids = [
        processor.submit(TopicConfig(label=label)).request_id for label in ("noun.animal", "noun.plant")
    ]
    assert [r.status for r in process_open_requests(config, tracker)] == ["done", "done"]
    old_mask = read_active(processor.paths)
    old_weights = weights_hash(processor.paths.model_dir)
    assert mask_notes(processor.paths.active_mask)["weights_sha256"] == old_weights
    assert tracker.production_digest() == old_mask.digest and diagnose(config, tracker).problems == []

    retrained = replace(config, train=replace(config.train, seed=config.train.seed + 1))
    with tracked.pipeline_run(retrained) as parent:
        assert tracked.train(retrained, parent) == "2"

    new_weights = weights_hash(processor.paths.model_dir)
    assert new_weights != old_weights
    archive = trained.run_dir / "masks" / "lineages" / old_weights[:12] / "active.json"
    assert load_mask(archive) == old_mask
    assert read_active(processor.paths) == Mask(config.bottleneck.n_codes)
    assert read_journal(processor.paths)[-1]["action"] == f"retrain:{new_weights[:12]}"
    requests = RequestStore(trained.run_dir / "store")
    old = [requests.get(rid) for rid in old_ids]
    assert [r.status for r in old] == ["superseded", "superseded"]
    carried = [r.error.split()[2] for r in old]  # "carried to <id> (codebook version 2, ...)"
    new = [requests.get(rid) for rid in carried]
    assert [(r.status, r.model_version) for r in new] == [("pending", "2"), ("pending", "2")]
    assert [r.topic_spec for r in new] == [r.topic_spec for r in old]
    # production still forgets both topics through the old codebook: explained, not broken
    found = diagnose(retrained, tracker)
    assert found.problems == [] and tracker.production_digest() == old_mask.digest
    assert any("production holds mask" in note and old_mask.digest[:12] in note for note in found.notes)
    with tracked.pipeline_run(retrained) as parent:  # a rerun carries nothing twice
        assert tracked.train(retrained, parent) == "2"
    assert len(requests.list()) == 4

    productions = []

    def each(processor: Processor, request_id: str) -> None:
        Processor.process(processor, request_id)
        productions.append(tracker.production_digest())

    answered = process_open_requests(retrained, tracker, each=each)

    assert [r.status for r in answered] == ["done", "done"]
    active = read_active(processor.paths)
    assert [s.name for s in active.sources] == carried
    assert mask_notes(processor.paths.active_mask)["weights_sha256"] == new_weights
    assert productions == [old_mask.digest, active.digest]  # held back until both were answered
    assert diagnose(retrained, tracker) == Diagnosis([], [])
    shown = trained.cli("request", "list", "--status", "superseded")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert all(f"carried to {rid}" in shown.stdout for rid in carried)


def test_doctor_reports_a_mask_over_other_weights(trained: Setup):
    paths = Processor(trained.config, Tracker(trained.config)).paths
    paths.masks_dir.mkdir(parents=True, exist_ok=True)
    save_mask(Mask(trained.config.bottleneck.n_codes), paths.active_mask, {"weights_sha256": "f" * 64})

    (problem,) = diagnose(trained.config).problems
    assert "is over codebook weights ffffffffffff" in problem
    with pytest.raises(CodeunlearnError, match="is over codebook weights"):
        read_active(paths)
