"""The SQL that opens a store's Parquet files as DuckDB views, and the checks on those files.

A table with no file yet gets an empty view of its schema, so queries on a new store return no rows.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from codeunlearn.store.schema import DERIVED_VIEWS_SQL, TABLES, empty_select


def views_sql(root: Path) -> str:
    """`CREATE OR REPLACE VIEW` statements for every store table under `root`, then the derived views."""
    views = []
    for spec in TABLES.values():
        directory = root / spec.directory
        if any(directory.glob("**/*.parquet")):
            glob = _sql_literal(str(directory.resolve() / "**" / "*.parquet"))
            columns = ", ".join(spec.schema.names)
            # by name over an empty select of the whole schema: a column added later reads as NULL
            # in files written before it existed
            source = (
                f"SELECT {columns}, filename FROM ({empty_select(spec.schema)} UNION ALL BY NAME "
                f"SELECT * FROM read_parquet({glob}, filename = true, hive_partitioning = false, "
                "union_by_name = true))"
            )
        else:
            source = empty_select(spec.schema)
        views.append(f"CREATE OR REPLACE VIEW {spec.view} AS {source};")
    return "\n".join(views) + DERIVED_VIEWS_SQL


def parquet_files(root: Path) -> list[Path]:
    """Every Parquet file of every store table under `root`, sorted."""
    return sorted(path for spec in TABLES.values() for path in (root / spec.directory).glob("**/*.parquet"))


def is_readable(path: Path) -> bool:
    """Whether `path` has a valid Parquet footer."""
    # The footer check finds truncated or overwritten files without reading the data.
    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException):
        return False
    return True


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
