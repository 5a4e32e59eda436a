"""`codeunlearn sweep` on a tiny trained codebook: every label answered and tracked, a stopped sweep
resumes without redoing topics or recounting texts, and the summary holds what it promises."""

from __future__ import annotations

import json
from dataclasses import replace

import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from codeunlearn.core.config import SweepConfig
from codeunlearn.pipeline.sweep import Sweep
from codeunlearn.pipeline.sweep_report import LIMITS
from codeunlearn.store.code_store import CodeStore
from codeunlearn.tracking.tracker import Tracker

from .conftest import Setup
from .setup_files import LABELS

SUMMARY_KEYS = {
    "corpus",
    "topics",
    "passed",
    "median_forget_drop",
    "median_retain_drop",
    "max_retain_drop",
    "median_seconds_per_topic",
    "codebook",
    "commit",
}


def stored_files(run_dir, table: str) -> set[str]:
    return {p.name for p in (run_dir / "store" / table).glob("**/*.parquet")}


def test_sweep_answers_every_label_tracks_them_and_resumes(trained: Setup, tmp_path):
    results = tmp_path / "results"
    done = trained.cli("sweep", "--results-dir", str(results), "sweep.min_examples=100")
    assert done.returncode == 0, done.stderr

    totals = json.loads((results / "sweep-corpus.json").read_text())
    assert set(totals) >= SUMMARY_KEYS and totals["topics"] == len(LABELS)
    rows = Sweep(trained.config).run()  # everything done: read back, nothing answered again
    assert sorted(r["topic"] for r in rows) == sorted(LABELS)
    for row in rows:
        assert row["status"] in ("passed", "failed", "rejected", "not_learned")
        assert {
            "forget_drop",
            "retain_drop",
            "forget_nats",
            "retain_nats",
            "gain",
            "learned",
            "random_share",
        } <= set(row)
        assert row["frontier"] and all(p["n_select"] <= row["n_eligible"] for p in row["frontier"])
    assert totals["passed"] == sum(r["status"] == "passed" for r in rows)
    assert (results / "sweep-corpus.parquet").exists() and (results / "sweep-corpus.png").stat().st_size > 0
    assert "| topic | status | limit |" in (results / "sweep-corpus.md").read_text()
    table = pq.read_table(results / "sweep-corpus.parquet").to_pylist()
    for row in table:  # every topic that did not pass says what stopped it
        assert (row["limit"] == "") == (row["status"] == "passed")
        assert all(name in LIMITS or name == "test" for name in row["limit"].split("+") if name)
    assert sum(totals.get("limits", {}).values()) == sum(r["status"] != "passed" for r in table)

    tracker = Tracker(trained.config)
    client = MlflowClient(tracker.uri)
    parents = client.search_runs([tracker.experiment_id], "attributes.run_name = 'sweep-corpus'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs(
        [tracker.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'"
    )
    assert sorted(c.data.params["topic"] for c in children) == sorted(LABELS)

    # A stopped sweep: two topics lost their results. Only they are answered again, from stored counts.
    sweep = Sweep(trained.config)
    where = sweep.where()
    kept = {t: where.topic_file(t).stat().st_mtime_ns for t in LABELS[2:]}
    for topic in LABELS[:2]:
        where.topic_file(topic).unlink()
    counted = stored_files(trained.run_dir, "text_codes")
    answered = []
    rows = sweep.run(on_topic=lambda row: answered.append(row["topic"]))
    assert sorted(answered) == sorted(LABELS[:2]) and len(rows) == len(LABELS)
    assert {t: where.topic_file(t).stat().st_mtime_ns for t in LABELS[2:]} == kept
    assert stored_files(trained.run_dir, "text_codes") == counted  # no text counted twice

    # Other settings are another sweep: nothing of this one is read back for it.
    other = replace(
        trained.config,
        sweep=SweepConfig(topics=(LABELS[0],)),
        calibration=replace(trained.config.calibration, grid=(2, 4)),
    )
    assert Sweep(other).where() != where


def test_topic_counts_are_the_stored_firings_of_its_texts(trained: Setup):
    sweep = Sweep(replace(trained.config, sweep=SweepConfig(topics=(LABELS[0],))))
    sweep.run()
    store = CodeStore(trained.run_dir / "store")
    per_code = (
        store.sql(
            "SELECT count(DISTINCT text_id) AS texts FROM text_tokens WHERE codebook = $c",
            {"c": sweep.codebook},
        )
        .column("texts")[0]
        .as_py()
    )
    splits = sweep.splits(LABELS[0])
    assert per_code == len(
        set(splits.forget_train.column("id").to_pylist()) | set(splits.control_train.column("id").to_pylist())
    )


def test_a_text_conditioned_sweep_fits_each_topic_a_detector_on_features_computed_once(trained: Setup):
    base = trained.config
    config = replace(
        base,
        bottleneck=replace(base.bottleneck, mask_policy="zero", mask_gate=2, mask_condition="text"),
        mining=replace(base.mining, detector_recall=0.9),
        sweep=SweepConfig(topics=(LABELS[0],), min_examples=100),
    )
    config.validate()
    sweep = Sweep(config)
    (row,) = sweep.run()
    assert row["detector_recall"] == 0.9 and row["status"] in ("passed", "failed", "rejected", "not_learned")
    features = sweep.text_features_path
    stamp = features.stat().st_mtime_ns
    splits = sweep.splits(LABELS[0])
    mined = set(map(str, splits.forget_train.column("id").to_pylist()))
    validated = set(map(str, splits.forget_val.column("id").to_pylist()))
    held = set(map(str, splits.retain_val.column("id").to_pylist()))
    cached = sweep._text_features
    own, others = cached.fitting_ids(LABELS[0], splits)
    # the detector never reads a validation text: mining's own topic texts and others outside validation
    assert set(own) == mined and others and not (validated | held) & {*own, *others}
    assert not {cached.labels[i] for i in others} & {LABELS[0]}

    # Another topic of the same sweep, in a new process: the features are read back, not recomputed.
    other = Sweep(replace(config, sweep=SweepConfig(topics=(LABELS[1],), min_examples=100)))
    assert other.where() == sweep.where()
    (second,) = other.run()
    assert second["detector_recall"] == 0.9
    # (the tiny corpus is under mining.detector_negatives: the first topic computed every text)
    assert features.stat().st_mtime_ns == stamp and len(other._text_features._rows) == len(cached._rows)
    assert Sweep(replace(config, bottleneck=replace(config.bottleneck, mask_condition="none"))).where() != (
        sweep.where()
    )
