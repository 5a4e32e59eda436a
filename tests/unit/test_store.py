"""The Parquet + DuckDB code store, on tiny count files under tmp_path."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.store.code_store import ENRICHMENT_SQL, CodeStore
from codeunlearn.store.count_rows import counts_table
from codeunlearn.store.schema import COUNTS_SCHEMA, REQUEST_EVENTS_SCHEMA
from codeunlearn.unlearning.selection import CodeCounts, enrichment


def make_counts(seed: int, n_codes: int = 32, n_tokens: int = 400, n_examples: int = 20) -> CodeCounts:
    rng = np.random.default_rng(seed)
    token_counts = rng.integers(0, 60, n_codes)
    token_counts[:2] = 0  # codes that never fire must survive the round trip
    return CodeCounts(
        token_counts, np.minimum(token_counts, rng.integers(0, n_examples + 1, n_codes)), n_tokens, n_examples
    )


@pytest.fixture
def store(tmp_path: Path) -> CodeStore:
    return CodeStore(tmp_path / "store")


def assert_counts_equal(actual: CodeCounts, expected: CodeCounts) -> None:
    np.testing.assert_array_equal(actual.token_counts, expected.token_counts)
    np.testing.assert_array_equal(actual.example_counts, expected.example_counts)
    assert (actual.n_tokens, actual.n_examples) == (expected.n_tokens, expected.n_examples)


def test_write_read_round_trip(store: CodeStore, tmp_path: Path) -> None:
    counts = make_counts(0)
    path = store.write_counts("run1", "forget", "noun.food", counts)
    assert path.is_relative_to(tmp_path)
    assert path.parent == store.counts_dir / "run=run1"
    assert path.name.startswith("forget-") and path.suffix == ".parquet"
    assert pq.read_schema(path).equals(COUNTS_SCHEMA)
    assert pq.read_metadata(path).num_rows == 32  # zeros included
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    assert_counts_equal(store.read_counts("run1", "forget"), counts)
    assert_counts_equal(store.read_counts("run1", "forget", topic="noun.food"), counts)


def test_files_of_the_same_run_split_topic_are_summed(store: CodeStore) -> None:
    first, second = make_counts(1), make_counts(2)
    store.write_counts("run1", "forget", "t", first)
    store.write_counts("run1", "forget", "t", second)
    store.write_counts("run1", "control", "t", make_counts(3))
    store.write_counts("run2", "forget", "t", make_counts(4))
    summed = store.read_counts("run1", "forget", "t")
    np.testing.assert_array_equal(summed.token_counts, first.token_counts + second.token_counts)
    np.testing.assert_array_equal(summed.example_counts, first.example_counts + second.example_counts)
    assert summed.n_tokens == 800 and summed.n_examples == 40
    assert store.runs() == ["run1", "run2"]


def test_missing_counts_list_what_exists(store: CodeStore) -> None:
    with pytest.raises(CodeunlearnError, match="no counts yet"):
        store.read_counts("run1", "forget")
    store.write_counts("run1", "forget", "t", make_counts(0))
    with pytest.raises(CodeunlearnError, match=r"no counts for run 'run1', split 'retain'.*split 'forget'"):
        store.read_counts("run1", "retain")


def test_several_topics_need_a_topic(store: CodeStore) -> None:
    store.write_counts("run1", "forget", "a", make_counts(0))
    store.write_counts("run1", "forget", "b", make_counts(1))
    with pytest.raises(CodeunlearnError, match=r"several topics.*\['a', 'b'\]"):
        store.read_counts("run1", "forget")
    assert_counts_equal(store.read_counts("run1", "forget", "b"), make_counts(1))


def test_mixed_codebook_sizes_are_rejected(store: CodeStore) -> None:
    store.write_counts("run1", "forget", "t", make_counts(0, n_codes=32))
    store.write_counts("run1", "forget", "t", make_counts(1, n_codes=16))
    with pytest.raises(CodeunlearnError, match="different codebooks"):
        store.read_counts("run1", "forget")


@pytest.mark.parametrize("run_id", ["", "../x", "a/b", "run*"])
def test_unsafe_run_id_is_rejected(store: CodeStore, run_id: str) -> None:
    with pytest.raises(CodeunlearnError, match="run_id="):
        store.write_counts(run_id, "forget", "t", make_counts(0))


def test_sql_sees_both_views(store: CodeStore) -> None:
    assert store.runs() == []
    assert not store.root.exists()  # reading an empty store creates nothing
    assert store.sql("SELECT * FROM code_rates").num_rows == 0
    counts = make_counts(0)
    store.write_counts("run1", "forget", "t", counts)
    store.write_counts("run1", "forget", "t", counts)
    raw = store.sql("SELECT count(*) AS n, count(DISTINCT filename) AS files FROM code_counts")
    assert raw.to_pylist() == [{"n": 64, "files": 2}]
    rates = store.sql("SELECT code_id, rate, n_files FROM code_rates ORDER BY code_id")
    assert isinstance(rates, pa.Table)
    np.testing.assert_allclose(rates.column("rate").to_numpy(), counts.token_counts / counts.n_tokens)
    assert set(rates.column("n_files").to_pylist()) == {2}
    assert store.sql("SELECT $x::INT AS x", {"x": 3}).to_pylist() == [{"x": 3}]


def test_database_file_holds_the_views(store: CodeStore) -> None:
    store.write_counts("run1", "forget", "t", make_counts(0))
    connection = duckdb.connect(str(store.database_path), read_only=True)
    try:
        assert connection.sql("SELECT count(*) FROM code_rates").fetchall() == [(32,)]
        kinds = connection.sql("SELECT table_type FROM information_schema.tables").fetchall()
    finally:
        connection.close()
    assert {kind for (kind,) in kinds} == {"VIEW"}


def test_bad_query_raises_with_duckdb_message(store: CodeStore) -> None:
    with pytest.raises(CodeunlearnError, match="Parser Error"):
        store.sql("SELEC 1")
    with pytest.raises(CodeunlearnError, match="no_such_table"):
        store.sql("SELECT * FROM no_such_table")


def test_corrupt_parquet_file_is_named(store: CodeStore) -> None:
    store.write_counts("run1", "forget", "t", make_counts(0))
    bad = store.write_counts("run1", "control", "t", make_counts(1))
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(CodeunlearnError, match="unreadable Parquet") as raised:
        store.read_counts("run1", "forget")
    assert str(bad) in str(raised.value)


def test_enrichment_sql_agrees_with_selection(store: CodeStore) -> None:
    forget_parts = [make_counts(10, n_codes=64), make_counts(11, n_codes=64)]
    control = make_counts(12, n_codes=64, n_tokens=500)
    for part in forget_parts:
        store.write_counts("run1", "forget", "t", part)
    store.write_counts("run1", "control", "t", control)
    forget = store.read_counts("run1", "forget")

    table = store.top_enriched("run1", min_count=5, limit=64)
    expected = enrichment(forget, control)
    eligible = np.flatnonzero(forget.token_counts >= 5)
    order = eligible[np.lexsort((eligible, -expected[eligible]))]
    assert table.column("code_id").to_pylist() == order.tolist()
    np.testing.assert_allclose(table.column("enrichment").to_numpy(), expected[order], rtol=1e-12)
    np.testing.assert_array_equal(table.column("forget_count").to_numpy(), forget.token_counts[order])
    assert (
        store.top_enriched("run1", min_count=5, limit=3).column("code_id").to_pylist() == order[:3].tolist()
    )
    assert "$run_id" in ENRICHMENT_SQL and "$limit" in ENRICHMENT_SQL


def test_top_enriched_needs_both_splits(store: CodeStore) -> None:
    store.write_counts("run1", "forget", "t", make_counts(0))
    with pytest.raises(CodeunlearnError, match="split 'control'"):
        store.top_enriched("run1", min_count=1, limit=5)


def test_every_view_answers_on_an_empty_store(store: CodeStore) -> None:
    for view in (
        "code_counts",
        "code_rates",
        "requests",
        "request_events",
        "masks",
        "mask_codes",
        "evaluations",
    ):
        assert store.sql(f"SELECT count(*) AS n FROM {view}").column("n").to_pylist() == [0]


def test_masks_view_has_one_row_per_version_even_when_digests_repeat(store: CodeStore) -> None:
    from codeunlearn.unlearning.masks import mask_from_codes, mask_rows

    topic = mask_from_codes(16, "noun.food", [1, 2, 3])
    both = topic.union(mask_from_codes(16, "req-a", [3, 4]))
    for version, mask in (("1", topic), ("2", both), ("3", both.without("req-a"))):  # 3 reverts 2
        store.append("mask_codes", mask_rows(mask, version, "7"), prefix=f"v{version}")
    rows = store.sql("SELECT mask_version, n_codes, sources, mask_digest FROM masks ORDER BY mask_version")
    assert [(r["mask_version"], r["n_codes"], r["sources"]) for r in rows.to_pylist()] == [
        ("1", 3, "noun.food"),
        ("2", 4, "noun.food,req-a"),
        ("3", 3, "noun.food"),
    ]
    assert rows.column("mask_digest")[0] == rows.column("mask_digest")[2]


def test_replace_counts_keeps_only_the_latest_of_a_run_split_topic(store: CodeStore) -> None:
    first, second = make_counts(1), make_counts(2)
    store.write_counts("run1", "forget", "noun.food", first)
    store.write_counts("run1", "forget", "noun.plant", first)  # another topic of the same split
    store.write_counts("run1", "control", "noun.food", first)  # another split
    store.write_counts("run2", "forget", "noun.food", first)  # another run
    store.replace_counts("run1", "forget", "noun.food", second)
    store.replace_counts("run1", "forget", "noun.food", second)  # re-mining gives the same counts again

    assert_counts_equal(store.read_counts("run1", "forget", "noun.food"), second)
    files = store.sql(
        "SELECT run_id, split, topic, count(DISTINCT filename) AS files FROM code_counts "
        "GROUP BY ALL ORDER BY ALL"
    ).to_pylist()
    assert files == [
        {"run_id": "run1", "split": "control", "topic": "noun.food", "files": 1},
        {"run_id": "run1", "split": "forget", "topic": "noun.food", "files": 1},
        {"run_id": "run1", "split": "forget", "topic": "noun.plant", "files": 1},
        {"run_id": "run2", "split": "forget", "topic": "noun.food", "files": 1},
    ]
    assert_counts_equal(store.read_counts("run1", "forget", "noun.plant"), first)


def test_readers_never_fail_while_a_writer_replaces_count_files(store: CodeStore, tmp_path: Path) -> None:
    """A reader lists the files, then opens them: a writer's `replace_counts` may remove one in
    between (a `request list` beside a processor mining). The read is retried, never failed."""
    for other in range(150):  # a store of many files: opening them all takes a while
        store.append("code_counts", counts_table(f"req-{other + 2}", "forget", "t", make_counts(other)))
    store.write_counts("req-1", "forget", "t", make_counts(0))
    writer_store = CodeStore(tmp_path / "store")  # another process's view of the same files
    stop = threading.Event()

    def churn() -> None:
        seed = 1
        while not stop.wait(0.01):  # a busy writer, not a tight loop that no reader could ever finish beside
            writer_store.replace_counts("req-1", "forget", "t", make_counts(seed))
            seed += 1

    writer = threading.Thread(target=churn)
    writer.start()
    errors, reads = [], 0
    start = time.monotonic()
    try:
        # 4 s of reads, and on a loaded machine (reads slow down) on until 10 reads have run, within 60 s
        while time.monotonic() - start < 4.0 or (reads + len(errors) < 10 and time.monotonic() - start < 60):
            try:
                rows = store.sql("SELECT count(*) AS n FROM code_rates WHERE run_id = 'req-1'")
                assert rows.column("n")[0].as_py() >= 1
                reads += 1
            except CodeunlearnError as error:
                errors.append(str(error))
    finally:
        stop.set()
        writer.join()
    assert reads > 5 and errors == []


def test_the_database_file_is_rewritten_only_when_the_views_change(store: CodeStore) -> None:
    store.write_counts("run-a", "forget", "t", make_counts(0))
    written = store.database_path.stat().st_mtime_ns
    store.write_counts("run-b", "forget", "t", make_counts(1))  # a new file, same views: no rewrite
    assert store.database_path.stat().st_mtime_ns == written
    with duckdb.connect(str(store.database_path), read_only=True) as connection:
        assert connection.sql("SELECT count(DISTINCT run_id) FROM code_counts").fetchall() == [(2,)]

    store.append("request_events", pa.Table.from_pylist([], schema=REQUEST_EVENTS_SCHEMA))  # a first file
    assert store.database_path.stat().st_mtime_ns != written
