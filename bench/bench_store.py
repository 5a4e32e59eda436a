"""Benchmark: DuckDB aggregation of code events (one row per token position x chosen code) into counts.

Generates a synthetic Parquet "code events" table under a temporary directory (columns run, split,
example_id, position, code_id), then times the GROUP BY queries that turn events into per-code
token counts and example counts, and reports events (rows) per second. Last, it times
`CodeStore.read_counts` summing many count files (C rows each) of one run/split.

    python bench/bench_store.py                       # 20M events, under a minute on 2 cores
    python bench/bench_store.py --rows 50000000 --out bench/results/store.json

Counting distinct examples per code with count(DISTINCT ...) is expensive, so example counts are measured
as a two-stage aggregation: GROUP BY split, code_id, example_id first, then count the groups per code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from codeunlearn.store.code_store import CodeStore
from codeunlearn.unlearning.selection import CodeCounts

SPLITS = ("forget", "control", "retain")

QUERIES = {
    # Per-code token counts: the hot path of mining.
    "token_counts": """
        SELECT split, code_id, count(*) AS token_count
        FROM events GROUP BY split, code_id
    """,
    # Per-code example counts: (example, code) pairs first, then pairs per code.
    "example_counts": """
        SELECT split, code_id, count(*) AS example_count
        FROM (SELECT split, code_id, example_id FROM events GROUP BY split, code_id, example_id)
        GROUP BY split, code_id
    """,
    # Both counts in one pass over the events, as a store writer would compute a CodeCounts.
    "both_counts": """
        SELECT split, code_id, sum(n)::BIGINT AS token_count, count(*) AS example_count
        FROM (
            SELECT split, code_id, example_id, count(*) AS n
            FROM events GROUP BY split, code_id, example_id
        )
        GROUP BY split, code_id
    """,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000, help="code events to generate")
    parser.add_argument("--n-codes", type=int, default=4096, help="codebook size C")
    parser.add_argument("--top-k", type=int, default=8, help="codes chosen per token position")
    parser.add_argument("--seq-len", type=int, default=64, help="token positions per example")
    parser.add_argument("--files", type=int, default=4, help="Parquet files the events are spread over")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per query (the median is reported)"
    )
    parser.add_argument("--threads", type=int, default=0, help="DuckDB threads; 0 keeps DuckDB's default")
    parser.add_argument(
        "--store-files",
        type=int,
        default=64,
        help="count files (C rows each) for the CodeStore.read_counts timing",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/store.json"), help="JSON results path"
    )
    return parser.parse_args()


def make_events(rows: int, n_codes: int, top_k: int, seq_len: int, seed: int) -> pa.Table:
    """Synthetic events in model order: example by example, position by position, top_k codes each."""
    rng = np.random.default_rng(seed)
    index = np.arange(rows, dtype=np.int64)
    token = index // top_k
    example_id = (token // seq_len).astype(np.int32)
    position = (token % seq_len).astype(np.int16)
    # Skewed code usage (u**2 favours low ids), like a trained codebook with a few busy codes.
    code_id = (n_codes * rng.random(rows, dtype=np.float32) ** 2).astype(np.int32).clip(0, n_codes - 1)
    n_examples = int(example_id[-1]) + 1 if rows else 0
    split_of_example = rng.integers(0, len(SPLITS), size=max(n_examples, 1), dtype=np.int8)
    split = pa.DictionaryArray.from_arrays(pa.array(split_of_example[example_id]), pa.array(SPLITS))
    run = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int8)), pa.array(["bench"]))
    return pa.table(
        {"run": run, "split": split, "example_id": example_id, "position": position, "code_id": code_id}
    )


def write_events(table: pa.Table, directory: Path, files: int) -> int:
    """Spread the events over `files` Parquet files; returns the bytes written."""
    size = 0
    bounds = np.linspace(0, table.num_rows, files + 1).astype(np.int64)
    for number, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        path = directory / f"events-{number:03d}.parquet"
        pq.write_table(table.slice(start, stop - start), path, row_group_size=1 << 20)
        size += path.stat().st_size
    return size


def time_query(connection: duckdb.DuckDBPyConnection, query: str, repeats: int) -> tuple[float, int]:
    """Median wall time of `query` over `repeats` runs (after one warm-up), and its result rows."""
    result_rows = connection.sql(query).to_arrow_table().num_rows  # warm-up: file metadata, page cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        connection.sql(query).to_arrow_table()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result_rows


def time_store(directory: Path, files: int, n_codes: int, repeats: int, seed: int) -> dict[str, float | int]:
    """Median time of CodeStore.read_counts summing `files` count files of one run/split."""
    rng = np.random.default_rng(seed)
    store = CodeStore(directory)
    for _ in range(files):
        token_counts = rng.integers(0, 1000, n_codes)
        counts = CodeCounts(token_counts, np.minimum(token_counts, 50), n_tokens=1000, n_examples=50)
        store.write_counts("bench", "forget", "topic", counts)
    store.read_counts("bench", "forget")  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        store.read_counts("bench", "forget")
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    rows = files * n_codes
    return {
        "seconds": round(seconds, 4),
        "rows_per_s": round(rows / seconds),
        "result_rows": n_codes,
        "rows": rows,
    }


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_store_") as temporary:
        directory = Path(temporary)
        start = time.perf_counter()
        events = make_events(args.rows, args.n_codes, args.top_k, args.seq_len, args.seed)
        parquet_bytes = write_events(events, directory, args.files)
        del events
        generate_s = time.perf_counter() - start

        connection = duckdb.connect()
        if args.threads:
            connection.execute(f"SET threads = {int(args.threads)}")
        threads = connection.sql("SELECT current_setting('threads')").fetchall()[0][0]
        glob = str(directory / "*.parquet").replace("'", "''")
        connection.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{glob}')")
        results = {}
        for name, query in QUERIES.items():
            seconds, result_rows = time_query(connection, query, args.repeats)
            results[name] = {
                "seconds": round(seconds, 4),
                "rows_per_s": round(args.rows / seconds),
                "result_rows": result_rows,
            }
        connection.close()
        results["store_read_counts"] = time_store(
            directory / "store", args.store_files, args.n_codes, args.repeats, args.seed
        )

    report = {
        "benchmark": "store_aggregation",
        "rows": args.rows,
        "n_codes": args.n_codes,
        "top_k": args.top_k,
        "seq_len": args.seq_len,
        "files": args.files,
        "parquet_mb": round(parquet_bytes / 2**20, 1),
        "repeats": args.repeats,
        "duckdb_threads": threads,
        "cpu_count": os.cpu_count(),
        "duckdb": duckdb.__version__,
        "python": platform.python_version(),
        "generate_s": round(generate_s, 2),
        "queries": results,
    }
    print(
        f"{args.rows:,} events, {report['parquet_mb']} MB Parquet, "
        f"DuckDB {duckdb.__version__}, threads={threads}"
    )
    print(f"{'query':<18}{'rows':>12}{'seconds':>10}{'rows/s':>16}")
    for name, result in results.items():
        rows = result.get("rows", args.rows)
        print(f"{name:<18}{rows:>12,}{result['seconds']:>10.3f}{result['rows_per_s']:>16,}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
