"""Texts that carry one label only: a built-in corpus drops a text filed under several labels."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

Row = tuple[str, ...]  # (text, label, anything else the reader keeps)


def single_label_rows(rows: Iterable[Row]) -> tuple[list[Row], int]:
    """The first row of each text whose every row has the same label, in order, and how many texts
    were dropped for having several: such a text would be one topic's text and another's retain text.

    Args:
        rows: (text, label, ...) tuples; repeats of a text under one label collapse to the first.

    Returns:
        (kept rows, number of distinct texts dropped).
    """
    labels_of: dict[str, set[str]] = {}
    first: list[Row] = []
    for row in rows:
        text, label = row[0], row[1]
        if text not in labels_of:
            first.append(row)
        labels_of.setdefault(text, set()).add(label)
    kept = [row for row in first if len(labels_of[row[0]]) == 1]
    return kept, len(first) - len(kept)


NUMBERED_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.string())])


def numbered_table(rows: list[tuple[str, str]]) -> pa.Table:
    """(text, label) rows as a table with ids `<label>-<n>`, n counting each label's rows from 0 in order."""
    counts: dict[str, int] = {}
    ids = []
    for _, label in rows:
        ids.append(f"{label}-{counts.get(label, 0):05d}")
        counts[label] = counts.get(label, 0) + 1
    return pa.table([ids, [text for text, _ in rows], [label for _, label in rows]], schema=NUMBERED_SCHEMA)


def label_counts(*sides: pa.Table) -> dict[str, int]:
    """Rows per label over the corpus sides given (train and test), unlabelled rows left out."""
    labels = pa.concat_arrays([side.column("label").combine_chunks() for side in sides])
    return {row["values"]: row["counts"] for row in pc.value_counts(labels).to_pylist() if row["values"]}
