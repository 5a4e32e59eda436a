"""Code firings per text in the code store: counted once per codebook, summed per topic by one query.

A topic's forget and control counts are sums over its texts' firings, so a corpus whose texts were
counted once serves every topic (and every request over those texts) without another forward pass.
Rows are keyed by `codebook` (the weights' digest and the token cut), so a retrained codebook never
reads the old one's firings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from codeunlearn.store.code_store import CodeStore
from codeunlearn.unlearning.code_statistics import CodeCounts
from codeunlearn.unlearning.mining import TextFirings


def codebook_key(weights_digest: str, max_length: int) -> str:
    """The key firings are stored under: the same weights cut at another length count other tokens."""
    return f"{weights_digest[:16]}-L{max_length}"


def counted_texts(store: CodeStore, codebook: str) -> set[str]:
    """Ids of the texts whose firings the store holds for `codebook`."""
    table = store.sql(
        "SELECT DISTINCT text_id FROM text_tokens WHERE codebook = $codebook", {"codebook": codebook}
    )
    return set(table.column("text_id").to_pylist())


def add_firings(store: CodeStore, codebook: str, text_ids: Sequence[str], firings: TextFirings) -> None:
    """Store the firings of `text_ids` (indexed as `firings.text_rows` index them): codes first, then
    the texts, so a text listed as counted always has its codes (a crash between leaves it uncounted)."""
    ids = np.asarray(list(text_ids), dtype=object)
    store.append(
        "text_codes",
        pa.table(
            {
                "codebook": [codebook] * len(firings.code_ids),
                "text_id": ids[firings.text_rows].tolist() if len(firings.text_rows) else [],
                "code_id": firings.code_ids.astype(np.int32),
                "token_count": firings.token_counts,
            }
        ),
        partition=f"codebook={codebook}",
    )
    store.append(
        "text_tokens",
        pa.table({"codebook": [codebook] * len(ids), "text_id": ids.tolist(), "n_tokens": firings.n_tokens}),
        partition=f"codebook={codebook}",
    )


def summed_counts(store: CodeStore, codebook: str, text_ids: Sequence[str], n_codes: int) -> CodeCounts:
    """The firing counts of a set of texts, summed in DuckDB (a text stored twice counts once).

    Raises:
        KeyError: some of `text_ids` were never counted for this codebook (the first few are named).
    """
    params = {"codebook": codebook, "ids": list(text_ids)}
    texts = store.sql(
        "SELECT text_id, max(n_tokens) AS n_tokens FROM text_tokens "
        "WHERE codebook = $codebook AND text_id IN (SELECT unnest($ids)) GROUP BY text_id",
        params,
    )
    if texts.num_rows != len(set(text_ids)):
        missing = sorted(set(text_ids) - set(texts.column("text_id").to_pylist()))
        raise KeyError(f"{len(missing)} texts were never counted for codebook {codebook}: {missing[:3]}")
    codes = store.sql(
        "SELECT code_id, sum(token_count)::BIGINT AS token_count, count(*)::BIGINT AS example_count FROM ("
        "  SELECT text_id, code_id, max(token_count) AS token_count FROM text_codes"
        "  WHERE codebook = $codebook AND text_id IN (SELECT unnest($ids)) GROUP BY text_id, code_id"
        ") GROUP BY code_id",
        params,
    )
    token_counts = np.zeros(n_codes, dtype=np.int64)
    example_counts = np.zeros(n_codes, dtype=np.int64)
    code_ids = codes.column("code_id").to_numpy()
    token_counts[code_ids] = codes.column("token_count").to_numpy()
    example_counts[code_ids] = codes.column("example_count").to_numpy()
    return CodeCounts(
        token_counts=token_counts,
        example_counts=example_counts,
        n_tokens=int(np.asarray(texts.column("n_tokens").to_numpy()).sum()),
        n_examples=texts.num_rows,
    )
