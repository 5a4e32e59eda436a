"""The code store: per-code firing counts as an append-only Parquet dataset, queried with DuckDB.

Layout under `root`:

    counts/run=<run_id>/<split>-<uuid>.parquet   one file per `write_counts` call, never rewritten
                                                 (`replace_counts` removes a run/split/topic's older files)
    store.duckdb                                 only VIEWS over the Parquet glob, for the duckdb CLI

Parquet files are the source of truth. Every query runs in a fresh in-memory DuckDB connection that
creates the same views, runs, and closes, so no connection or file lock is held between calls and any
number of processes can read while one process appends files (a file replaced between the glob and
the read is read again). `store.duckdb` is refreshed after a write that changes the views' statements
(a table's first file; `store.duckdb.views` holds their digest) so `duckdb root/store.duckdb` offers
every view too; it is never read here, so a user holding it open (DuckDB allows one writer per file)
only costs a logged warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.store.count_rows import ENRICHMENT_SQL, counts_from_rows, counts_table
from codeunlearn.store.schema import TABLES
from codeunlearn.store.views import is_readable, parquet_files, views_sql
from codeunlearn.unlearning.code_statistics import CodeCounts

logger = logging.getLogger(__name__)

READ_ATTEMPTS = 10  # reads of a store whose files a concurrent writer replaces (about 1 s of waits in all)

# run_id and split become path parts, so they are kept to characters that are safe in paths and globs.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class CodeStore:
    """Per-code firing counts of many runs, splits and topics, under one directory."""

    def __init__(self, root: Path) -> None:
        """Open the store at `root`; nothing is created until the first `write_counts`.

        Args:
            root: the store directory (it need not exist yet: reads then see an empty store).
        """
        self.root = Path(root)
        self.counts_dir = self.root / "counts"
        self.database_path = self.root / "store.duckdb"

    def write_counts(self, run_id: str, split: str, topic: str, counts: CodeCounts) -> Path:
        """Add one Parquet file holding `counts`, one row per code (zeros included).

        The file appears atomically: it is written under a temporary name in the same directory and
        renamed, so a concurrent reader sees either no file or the whole file.

        Args:
            run_id: the run (codebook) the counts belong to; letters, digits, `._-`.
            split: e.g. "forget", "control", "retain"; letters, digits, `._-`.
            topic: the topic name (free text).
            counts: the counts to store.

        Returns:
            The path of the new file.

        Raises:
            CodeunlearnError: run_id or split is not a safe name.
        """
        _check_name(run_id, "run_id")
        _check_name(split, "split")
        path = self.append("code_counts", counts_table(run_id, split, topic, counts), f"run={run_id}", split)
        logger.info("stored %s counts of run %s in %s", split, run_id, path)
        return path

    def replace_counts(self, run_id: str, split: str, topic: str, counts: CodeCounts) -> Path:
        """Write `counts` as the only counts of run/split/topic: earlier files for them are removed.

        Re-mining the same sets with the same model must not sum with the first mining's counts. The
        new file is published before the old ones go, so a concurrent reader may briefly see both but
        never none.

        Returns:
            The path of the new file.
        """
        path = self.write_counts(run_id, split, topic, counts)
        earlier = (
            self.sql(
                "SELECT DISTINCT filename FROM code_counts "
                "WHERE run_id = $run_id AND split = $split AND topic = $topic",
                {"run_id": run_id, "split": split, "topic": topic},
            )
            .column("filename")
            .to_pylist()
        )
        stale = [Path(name) for name in earlier if Path(name).resolve() != path.resolve()]
        for old in stale:
            old.unlink(missing_ok=True)
        if stale:
            logger.info("replaced %d earlier %s count file(s) of run %s", len(stale), split, run_id)
            self.refresh_database()
        return path

    def append(
        self, view: str, table: pa.Table, partition: str = "", prefix: str = "part", key: str = ""
    ) -> Path:
        """Add `table` as one new Parquet file of the store table behind `view` (see store/schema.py).

        The file appears atomically: it is written under a temporary name that the views' glob does not
        match and renamed, so a concurrent reader sees either no file or the whole file. With `key`, the
        file is `<prefix>-<key>.parquet` and a replay with the same key replaces it rather than adding
        its rows a second time.

        Returns:
            The path of the new file.
        """
        spec = TABLES[view]
        table = table.select(spec.schema.names).cast(spec.schema)
        directory = self.root / spec.directory / partition if partition else self.root / spec.directory
        directory.mkdir(parents=True, exist_ok=True)
        if key:
            _check_name(key, "key")
        path = directory / f"{prefix}-{key or uuid.uuid4().hex}.parquet"
        temporary = directory / f".{path.name}.tmp"
        try:
            pq.write_table(table, temporary)
            with temporary.open("rb") as handle:
                os.fsync(handle.fileno())  # the data reaches the disk before the rename publishes it
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        self.refresh_database()
        return path

    def read_counts(self, run_id: str, split: str, topic: str | None = None) -> CodeCounts:
        """The counts of one run/split/topic, summed over every file written for it.

        Args:
            run_id: the run.
            split: the split.
            topic: the topic; None accepts any, as long as the split holds a single topic.

        Returns:
            The summed counts.

        Raises:
            CodeunlearnError: nothing matches (the message lists what the store holds), topic is None
                but the split holds several topics, the files disagree on the codebook size, or a
                count file is corrupt.
        """
        table = self.sql(
            "SELECT topic, code_id, token_count, example_count, n_tokens, n_examples FROM code_rates "
            "WHERE run_id = $run_id AND split = $split "
            "AND ($topic::VARCHAR IS NULL OR topic = $topic::VARCHAR) "
            "ORDER BY topic, code_id",
            {"run_id": run_id, "split": split, "topic": topic},
        )
        where = f"run {run_id!r}, split {split!r}" + ("" if topic is None else f", topic {topic!r}")
        if table.num_rows == 0:
            raise CodeunlearnError(
                f"the code store {self.root} has no counts for {where}; {self._inventory()}"
            )
        topics = sorted(set(table.column("topic").to_pylist()))
        if len(topics) > 1:
            raise CodeunlearnError(
                f"the code store holds counts of several topics for {where}: {topics}; "
                "pass topic= one of them"
            )
        return counts_from_rows(table, where)

    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query with the `code_counts` and `code_rates` views available.

        `code_counts` has one row per stored row plus a `filename` column; `code_rates` sums the files
        of each run/split/topic/code and adds `rate` = token_count / n_tokens.

        Args:
            query: DuckDB SQL.
            params: values for `$name` parameters in the query.

        Returns:
            The result as an Arrow table.

        Raises:
            CodeunlearnError: the query fails (DuckDB's message included) or a count file is corrupt
                (the file named).
        """
        attempt = 1
        while True:
            try:
                with self._connection() as connection:
                    return connection.sql(query, params=dict(params) if params else None).to_arrow_table()
            except duckdb.IOException as error:
                # a writer replaced a file between the glob and the read (replace_counts publishes
                # the new file, then removes the old): read again, and the glob finds the new one
                if "No such file" not in str(error) or attempt >= READ_ATTEMPTS:
                    raise self._query_error(query, error) from error
            except duckdb.Error as error:
                raise self._query_error(query, error) from error
            time.sleep(0.02 * attempt)
            attempt += 1

    def runs(self) -> list[str]:
        """The run ids that have counts, sorted."""
        table = self.sql("SELECT DISTINCT run_id FROM code_counts ORDER BY run_id")
        return [str(run) for run in table.column("run_id").to_pylist()]

    def top_enriched(
        self,
        run_id: str,
        min_count: int,
        limit: int,
        forget_split: str = "forget",
        control_split: str = "control",
        topic: str | None = None,
        pseudo_count: float = 0.5,
    ) -> pa.Table:
        """The most enriched codes of a run, computed in SQL by `ENRICHMENT_SQL` (no model needed).

        Args:
            run_id: the run.
            min_count: codes with fewer forget token firings are left out.
            limit: at most this many rows.
            forget_split: the split holding the forget-set counts.
            control_split: the split holding the control-set counts.
            topic: restrict both splits to this topic; None sums all topics.
            pseudo_count: additive smoothing, as in `code_statistics.enrichment`.

        Returns:
            Columns code_id, forget_count, control_count, forget_rate, control_rate, enrichment,
            best first.

        Raises:
            CodeunlearnError: limit is negative, either split has no counts, or a query fails.
        """
        if limit < 0:
            raise CodeunlearnError(f"limit={limit}: use 0 or more rows")
        for split in (forget_split, control_split):
            found = self.sql(
                "SELECT count(*) AS n FROM code_counts WHERE run_id = $run_id AND split = $split "
                "AND ($topic::VARCHAR IS NULL OR topic = $topic::VARCHAR)",
                {"run_id": run_id, "split": split, "topic": topic},
            )
            if found.column("n")[0].as_py() == 0:
                raise CodeunlearnError(
                    f"the code store {self.root} has no counts for run {run_id!r}, split {split!r}"
                    + ("" if topic is None else f", topic {topic!r}")
                    + f"; {self._inventory()}"
                )
        params = {
            "run_id": run_id,
            "forget_split": forget_split,
            "control_split": control_split,
            "topic": topic,
            "min_count": min_count,
            "pseudo_count": pseudo_count,
            "limit": limit,
        }
        return self.sql(ENRICHMENT_SQL, params)

    def refresh_database(self) -> bool:
        """Create or replace the views in `store.duckdb`, for tools that open it directly.

        Returns:
            True if written; False if another process holds the database (logged, not raised: the
            Parquet files are the source of truth and every query here builds its own views).
        """
        sql = views_sql(self.root)
        # The views read their files through globs, so a new file needs no refresh; only a table's
        # first file, or a new schema, changes the statements. Skipping the rest keeps a write from
        # reopening every file of the store.
        stamp = self.database_path.with_name(self.database_path.name + ".views")
        digest = hashlib.sha256(sql.encode()).hexdigest()
        if self.database_path.is_file() and stamp.is_file() and stamp.read_text() == digest:
            return True
        try:
            connection = duckdb.connect(str(self.database_path))
        except duckdb.Error as error:
            logger.warning(
                "could not update the views in %s (%s); queries are unaffected", self.database_path, error
            )
            return False
        try:
            connection.execute(sql)
        finally:
            connection.close()
        stamp.write_text(digest)
        return True

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh in-memory connection with the views, closed on exit."""
        connection = duckdb.connect()
        try:
            connection.execute(views_sql(self.root))
            yield connection
        finally:
            connection.close()

    def _inventory(self) -> str:
        """What the store holds, for error messages."""
        try:
            with self._connection() as connection:
                rows = connection.sql(
                    "SELECT run_id, split, string_agg(DISTINCT topic, ', ' ORDER BY topic) AS topics "
                    "FROM code_counts GROUP BY run_id, split ORDER BY run_id, split"
                ).fetchall()
        except duckdb.Error:
            return "its contents could not be listed"
        if not rows:
            return "it holds no counts yet (write them with CodeStore.write_counts)"
        listed = "; ".join(f"run {run!r} split {split!r} (topics: {topics})" for run, split, topics in rows)
        return f"it holds: {listed}"

    def _query_error(self, query: str, error: duckdb.Error) -> CodeunlearnError:
        """Name the corrupt count files if there are any, else pass DuckDB's message on."""
        message = str(error)
        corrupt = [
            path
            for path in parquet_files(self.root)
            if str(path.resolve()) in message or not is_readable(path)
        ]
        if corrupt:
            names = ", ".join(str(path) for path in corrupt)
            return CodeunlearnError(
                f"the code store {self.root} holds unreadable Parquet file(s): {names} "
                f"({message.splitlines()[0]}); move or delete them and write those counts again"
            )
        return CodeunlearnError(f"code store query failed: {message}\nquery: {query.strip()}")


def _check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not _NAME_PATTERN.fullmatch(value):
        raise CodeunlearnError(
            f"{what}={value!r}: use letters, digits, '.', '_' or '-' (starting with a letter or digit); "
            "it becomes part of a file path"
        )
