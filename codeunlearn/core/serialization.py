"""JSON-safe values: NaN (undefined or unknown) becomes null, which JSON has and NaN is not."""

from __future__ import annotations

import math
from typing import Any


def without_nan(value: Any) -> Any:
    """`value` with every float NaN, at any depth of dicts, lists and tuples, replaced by None."""
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def nan_for_none(value: Any) -> Any:
    """The inverse of `without_nan` for numeric records: every None, at any depth, becomes NaN."""
    if isinstance(value, dict):
        return {k: nan_for_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_for_none(v) for v in value]
    return math.nan if value is None else value
