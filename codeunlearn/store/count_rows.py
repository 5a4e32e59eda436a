"""Per-code counts as rows of the code store: `CodeCounts` to a `code_counts` table and back, and the
query that ranks a run's codes by enrichment over those rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.store.schema import COUNTS_SCHEMA
from codeunlearn.unlearning.code_statistics import CodeCounts

ENRICHMENT_SQL = """
-- Per-code enrichment of a forget split over a control split, as code_statistics.enrichment computes
-- it, ranked best first (ties by lower code_id, like select_codes). Needs the code_rates view.
-- Parameters ($name): run_id, forget_split, control_split, topic (NULL sums all topics of each split),
-- min_count (minimum forget token count), pseudo_count (additive smoothing, 0.5 in selection), limit.
-- enrichment = ((f + a) / (n_f + 2a)) / ((c + a) / (n_c + 2a)), a = pseudo_count.
WITH forget AS (
    SELECT code_id, sum(token_count) AS token_count, sum(n_tokens) AS n_tokens
    FROM code_rates
    WHERE run_id = $run_id AND split = $forget_split AND ($topic::VARCHAR IS NULL OR topic = $topic::VARCHAR)
    GROUP BY code_id
), control AS (
    SELECT code_id, sum(token_count) AS token_count, sum(n_tokens) AS n_tokens
    FROM code_rates
    WHERE run_id = $run_id AND split = $control_split AND ($topic::VARCHAR IS NULL OR topic = $topic::VARCHAR)
    GROUP BY code_id
)
SELECT code_id,
       forget.token_count::BIGINT AS forget_count,
       control.token_count::BIGINT AS control_count,
       forget.token_count::DOUBLE / nullif(forget.n_tokens, 0) AS forget_rate,
       control.token_count::DOUBLE / nullif(control.n_tokens, 0) AS control_rate,
       ((forget.token_count::DOUBLE + $pseudo_count::DOUBLE)
           / (forget.n_tokens + 2.0 * $pseudo_count::DOUBLE))
         / ((control.token_count::DOUBLE + $pseudo_count::DOUBLE)
           / (control.n_tokens + 2.0 * $pseudo_count::DOUBLE)) AS enrichment
FROM forget JOIN control USING (code_id)
WHERE forget.token_count >= $min_count::BIGINT
ORDER BY enrichment DESC, code_id ASC
LIMIT $limit::BIGINT
"""


def counts_table(run_id: str, split: str, topic: str, counts: CodeCounts) -> pa.Table:
    """One `code_counts` row per code of `counts` (zeros included), tagged with run, split and topic."""
    n_codes = counts.n_codes
    columns = {
        "run_id": pa.array([run_id] * n_codes, pa.string()),
        "split": pa.array([split] * n_codes, pa.string()),
        "topic": pa.array([topic] * n_codes, pa.string()),
        "code_id": pa.array(np.arange(n_codes, dtype=np.int32)),
        "token_count": pa.array(counts.token_counts),
        "example_count": pa.array(counts.example_counts),
        "n_tokens": pa.array(np.full(n_codes, counts.n_tokens, dtype=np.int64)),
        "n_examples": pa.array(np.full(n_codes, counts.n_examples, dtype=np.int64)),
    }
    return pa.table(columns, schema=COUNTS_SCHEMA)


def counts_from_rows(table: pa.Table, where: str) -> CodeCounts:
    """CodeCounts from code_rates rows of one run/split/topic, checking every code is present once."""
    code_ids = table.column("code_id").to_numpy()
    n_tokens = table.column("n_tokens").to_numpy()
    n_examples = table.column("n_examples").to_numpy()
    # Every file holds all C codes, so a gap or differing totals means files of different codebooks.
    if not np.array_equal(code_ids, np.arange(len(code_ids))) or np.ptp(n_tokens) or np.ptp(n_examples):
        raise CodeunlearnError(
            f"the count files for {where} disagree on the codebook (code ids 0..{int(code_ids.max())}, "
            f"{len(code_ids)} distinct): they come from different codebooks; store each under its own run_id"
        )
    return CodeCounts(
        token_counts=table.column("token_count").to_numpy().astype(np.int64),
        example_counts=table.column("example_count").to_numpy().astype(np.int64),
        n_tokens=int(n_tokens[0]),
        n_examples=int(n_examples[0]),
    )
