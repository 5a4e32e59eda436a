"""Seeded samples of corpus rows that do not depend on which other rows are in the table.

A `Draw` is one named stream of sampling decisions under one seed. Its `rng` serves draws with no row
identity (a swap control's replacement words, the topic's own samples). Its `keys` give every row a
pseudo-random key made from the seed, the stream's name and the row's id alone, so taking the rows with the
smallest keys chooses a row or not whatever else the table holds: two topics of one corpus, whose non-topic
tables differ only by their own rows, take the same retain and control rows wherever both may. A sweep over
a corpus's topics then meets each text once instead of once per topic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Draw:
    """One stream of sampling decisions: `purpose` names it, `seed` seeds it.

    `from_end` reverses the order of rows: two draws of one stream, one from each end, take the same row
    only when between them they take nearly the whole table.
    """

    seed: int
    purpose: str
    from_end: bool = False

    def rng(self) -> np.random.Generator:
        """A generator of the stream, for draws that pick no corpus row by identity."""
        # One independent stream per purpose, so changing one cap does not reshuffle the other sets.
        purpose_key = int.from_bytes(hashlib.sha1(self.purpose.encode()).digest()[:4], "big")
        return np.random.default_rng([int(self.seed), purpose_key])

    def keys(self, ids: Iterable[str]) -> np.ndarray:
        """Each id's key (uint64): the first 8 bytes of sha256("seed:purpose:id")."""
        prefix = f"{int(self.seed)}:{self.purpose}:"
        return np.fromiter(
            (
                int.from_bytes(hashlib.sha256((prefix + str(row_id)).encode()).digest()[:8], "big")
                for row_id in ids
            ),
            dtype=np.uint64,
        )

    def ranks(self, table: pa.Table) -> np.ndarray:
        """Each row's place (0 first) in the stream's order of `table`: by key, the largest first when
        `from_end`. Equal keys (practically never) keep the table's order."""
        keys = self.keys(table.column("id").to_pylist())
        order = np.argsort(~keys if self.from_end else keys, kind="stable")
        ranks = np.empty(len(keys), dtype=np.int64)
        ranks[order] = np.arange(len(keys))
        return ranks

    def first(self, table: pa.Table, limit: int) -> pa.Table:
        """The `limit` rows that come first in the stream's order, in the table's order."""
        if table.num_rows <= limit:
            return table
        return table.take(np.sort(np.argsort(self.ranks(table))[:limit]))

    def turns(self, table: pa.Table, column: str = "label") -> np.ndarray:
        """Each row's place (0 first) among the rows of its `column` value, in the stream's order
        (nulls count as one value)."""
        values = table.column(column).to_pylist()
        turn = np.empty(len(values), dtype=np.int64)
        seen: dict[object, int] = {}
        for index in np.argsort(self.ranks(table), kind="stable"):
            value = values[index]
            turn[index] = seen.get(value, 0)
            seen[value] = turn[index] + 1
        return turn

    def first_balanced(self, table: pa.Table, limit: int, column: str = "label") -> pa.Table:
        """The `limit` rows that come first when each value of `column` takes its turn: every value's
        first row in the stream's order, then every value's second, and so on (nulls count as one
        value). Values with few rows run out and the others fill their places, so the counts per value
        differ by at most one wherever rows allow. The rows come back in the table's order."""
        if table.num_rows <= limit:
            return table
        order = np.lexsort((self.ranks(table), self.turns(table, column)))  # by turn, then stream order
        return table.take(np.sort(order[:limit]))
