"""The code store's tables: one Arrow schema and one Parquet directory per table, and the SQL views.

Every table is an append-only Parquet dataset (`<store>/<directory>/**/*.parquet`); history is kept,
current state is a view. `codeunlearn sql` and `duckdb <store>/store.duckdb` see the same views.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class TableSpec:
    view: str  # the DuckDB view over the raw rows
    directory: str  # under the store root
    schema: pa.Schema


COUNTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("split", pa.string()),
        ("topic", pa.string()),
        ("code_id", pa.int32()),
        ("token_count", pa.int64()),
        ("example_count", pa.int64()),
        ("n_tokens", pa.int64()),
        ("n_examples", pa.int64()),
    ]
)
"""One row per code per write; n_tokens / n_examples repeat the file's totals on every row."""

FRONTIER_POINT = pa.struct(
    [
        ("n_select", pa.int64()),
        ("forget_drop", pa.float64()),  # normalised, on the request's validation split
        ("retain_drop", pa.float64()),
        ("forget_nats", pa.float64()),
        ("retain_nats", pa.float64()),
    ]
)
"""One S' scored by calibration (codeunlearn.unlearning.calibration.Point)."""

REQUEST_EVENTS_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("seq", pa.int64()),  # the store's event number (requests.seq); the latest is the request's state
        # pending | processing | done | rejected | failed | reverting | reverted | superseded
        ("status", pa.string()),
        ("topic_kind", pa.string()),  # label | keywords | regex | examples_file
        ("topic_spec", pa.string()),  # JSON of the topic value; stays in the store, never in MLflow
        ("topic_hash", pa.string()),  # sha256 of the spec (and of the examples file's content)
        ("model_name", pa.string()),  # registered codebook model
        ("model_version", pa.string()),  # its version the request targets
        ("submitted_at", pa.timestamp("us", tz="UTC")),
        ("updated_at", pa.timestamp("us", tz="UTC")),
        ("error", pa.string()),  # why it failed or was rejected
        ("mask_version", pa.string()),  # registered masked-model version that answers it
        ("mask_digest", pa.string()),
        ("worker", pa.string()),  # host:pid of the process that wrote the event
        ("attempts", pa.int64()),  # times processing was started; NULL (read as 0) in older events
        # the calibration it was answered with; every one NULL in events written before they existed
        ("chosen_n_select", pa.int64()),  # S' chosen on the validation split; NULL: none passed
        ("frontier", pa.list_(FRONTIER_POINT)),  # every S' scored on validation; [] uncalibrated
        ("test_forget_drop", pa.float64()),  # held-out test drops of the version it was promoted or
        ("test_retain_drop", pa.float64()),  # failed on
        ("not_before", pa.timestamp("us", tz="UTC")),  # no retry before then; NULL: none waiting
    ]
)

MASK_CODES_SCHEMA = pa.schema(
    [
        ("mask_digest", pa.string()),
        ("mask_version", pa.string()),
        ("codebook_version", pa.string()),
        ("source", pa.string()),  # request id or topic the code was mined for
        ("code_id", pa.int32()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

EVALUATIONS_SCHEMA = pa.schema(
    [
        ("evaluation_id", pa.string()),
        ("mask_digest", pa.string()),
        ("mask_version", pa.string()),
        ("codebook_version", pa.string()),
        ("request_ids", pa.string()),  # comma-separated
        ("split", pa.string()),  # forget (of the request) or retain
        ("base_nll", pa.float64()),
        ("codebook_nll", pa.float64()),
        ("masked_nll", pa.float64()),
        ("normalized_drop", pa.float64()),
        ("gates_passed", pa.bool_()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

TEXT_CODES_SCHEMA = pa.schema(
    [
        ("codebook", pa.string()),  # weights digest and token cut of the codebook that chose the codes
        ("text_id", pa.string()),
        ("code_id", pa.int32()),
        ("token_count", pa.int64()),  # content tokens of the text where the code was among the top-k
    ]
)
"""Code firings per text, counted once per codebook so a topic's counts are a query, not a forward pass."""

TEXT_TOKENS_SCHEMA = pa.schema(
    [
        ("codebook", pa.string()),
        ("text_id", pa.string()),
        ("n_tokens", pa.int64()),  # content tokens counted in the text
    ]
)

TABLES: dict[str, TableSpec] = {
    spec.view: spec
    for spec in (
        TableSpec("code_counts", "counts", COUNTS_SCHEMA),
        TableSpec("request_events", "requests", REQUEST_EVENTS_SCHEMA),
        TableSpec("mask_codes", "masks", MASK_CODES_SCHEMA),
        TableSpec("evaluations", "evaluations", EVALUATIONS_SCHEMA),
        TableSpec("text_codes", "text_codes", TEXT_CODES_SCHEMA),
        TableSpec("text_tokens", "text_tokens", TEXT_TOKENS_SCHEMA),
    )
}

DERIVED_VIEWS_SQL = """
CREATE OR REPLACE VIEW code_rates AS
SELECT run_id, split, topic, code_id,
       sum(token_count)::BIGINT AS token_count,
       sum(example_count)::BIGINT AS example_count,
       sum(n_tokens)::BIGINT AS n_tokens,
       sum(n_examples)::BIGINT AS n_examples,
       count(*)::BIGINT AS n_files,
       sum(token_count)::DOUBLE / nullif(sum(n_tokens), 0) AS rate
FROM code_counts
GROUP BY run_id, split, topic, code_id;

CREATE OR REPLACE VIEW requests AS
SELECT * EXCLUDE (filename) FROM request_events
QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY seq DESC, filename DESC) = 1;

CREATE OR REPLACE VIEW masks AS
SELECT mask_version, any_value(mask_digest) AS mask_digest, any_value(codebook_version) AS codebook_version,
       count(DISTINCT code_id)::BIGINT AS n_codes,
       string_agg(DISTINCT source, ',' ORDER BY source) AS sources,
       min(created_at) AS created_at
FROM mask_codes
GROUP BY mask_version;
"""
"""code_rates: counts summed over the files of each run/split/topic/code, with rate = tokens fired / tokens.
requests: each request's latest event, i.e. its current state.
masks: one row per registered mask version: its digest, code count, sources (request ids or topics)
and codebook version (a revert can give a later version the digest of an earlier one)."""


_DUCK_TYPES = {
    pa.string(): "VARCHAR",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


def duck_type(arrow_type: pa.DataType) -> str:
    """The DuckDB type of a column's Arrow type (lists and structs of the scalar types above)."""
    if pa.types.is_list(arrow_type):
        return f"{duck_type(arrow_type.value_type)}[]"
    if pa.types.is_struct(arrow_type):
        fields = ", ".join(f"{field.name} {duck_type(field.type)}" for field in arrow_type)
        return f"STRUCT({fields})"
    return _DUCK_TYPES[arrow_type]


def empty_select(schema: pa.Schema) -> str:
    """A SELECT with the table's columns (plus `filename`) and no rows, for a table with no files yet."""
    columns = [f"NULL::{duck_type(field.type)} AS {field.name}" for field in schema]
    return f"SELECT {', '.join(columns)}, NULL::VARCHAR AS filename WHERE false"
