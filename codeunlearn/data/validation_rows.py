"""Which train-side rows a topic's validation splits take (topic.val_rows).

`any` samples them from every train-side row; `unseen` first from the rows whose text the codebook
did not train on (codeunlearn.pipeline.training_texts.validation_seen_texts), as none of the test
split's were: a text trained on has a larger gain over the base model, so the same rise in nats reads
as a smaller normalised drop on it, and a validation split of such texts misjudges the test's drop.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def carve_validation(
    table: pa.Table, size: int, rng: np.random.Generator, seen: AbstractSet[str] = frozenset()
) -> tuple[pa.Table, pa.Table]:
    """`size` sampled rows and the rows left, both in the corpus's order; rows whose text is in `seen`
    are taken only when the others run short."""
    taken = np.zeros(table.num_rows, dtype=bool)
    if size > 0 and not seen:
        taken[rng.choice(table.num_rows, size=size, replace=False)] = True
    elif size > 0:
        is_seen = np.array([text in seen for text in table.column("text").to_pylist()], dtype=bool)
        unseen = np.flatnonzero(~is_seen)
        if unseen.size >= size:
            taken[rng.choice(unseen, size=size, replace=False)] = True
        else:
            taken[unseen] = True
            taken[rng.choice(np.flatnonzero(is_seen), size=size - unseen.size, replace=False)] = True
    return table.filter(pa.array(taken)), table.filter(pa.array(~taken))


def unseen_if_enough(pool: pa.Table, seen: AbstractSet[str], size: int) -> pa.Table:
    """The pool's rows whose text is not in `seen`, when they number at least `size`; else the pool."""
    if not seen:
        return pool
    unseen = pool.filter(
        pc.invert(pc.is_in(pool.column("text"), value_set=pa.array(list(seen), pa.string())))
    )
    return unseen if unseen.num_rows >= size else pool
