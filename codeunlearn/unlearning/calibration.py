"""Calibration: choose how many of a topic's ranked codes to mask from the topic's own validation data.

The masks tried are nested (the top S' of one ranking), so the forget drop grows with S' and so does the
retain drop. The cheapest S' that clears both gates is then the smallest S' whose forget drop clears its
gate, provided its retain drop clears too: a bisection over the grid finds it in about log2(grid) scored
masks instead of one per grid point. `search="grid"` scores every point (for a frontier plot).

Everything here is a pure function of the scores it is handed: the caller scores masks on validation
rows only (never the held-out test split, which decides promotion afterwards).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from codeunlearn.core.serialization import nan_for_none

SEARCHES = ("bisect", "grid")


@dataclass(frozen=True)
class Point:
    """One S' scored on validation: normalised drops (0 = codebook model, 1 = base) and raw nats."""

    n_select: int
    forget_drop: float
    retain_drop: float
    forget_nats: float  # masked - codebook NLL on the validation forget rows, nats/token
    retain_nats: float

    def failures(self, min_forget_drop: float, max_retain_drop: float) -> list[str]:
        reasons = []
        if not self.forget_drop >= min_forget_drop:
            reasons.append(f"forget drop {self.forget_drop:.3f} < {min_forget_drop}")
        if not self.retain_drop <= max_retain_drop:
            reasons.append(f"retain drop {self.retain_drop:.3f} > {max_retain_drop}")
        return reasons

    def row(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Point:
        """From `row()` as JSON or the store read it back (an undefined drop: None or NaN)."""
        values = {name: row.get(name) for name in cls.__dataclass_fields__}
        return cls(int(values.pop("n_select")), **{k: float(nan_for_none(v)) for k, v in values.items()})


@dataclass(frozen=True)
class Calibration:
    """The chosen S' (None: no grid point clears both gates), every point scored, and why."""

    chosen: Point | None
    frontier: list[Point] = field(default_factory=list)  # every point scored, by S'
    reason: str = ""  # why nothing was chosen, for a person to act on
    best: Point | None = None  # the chosen point, or the nearest miss the reason names

    @property
    def passed(self) -> bool:
        return self.chosen is not None

    def summary(self) -> dict:
        return {
            "chosen_n_select": self.chosen.n_select if self.chosen else None,
            "best_n_select": self.best.n_select if self.best else None,  # chosen, or the nearest miss
            "reason": self.reason,
            "frontier": [p.row() for p in self.frontier],
        }


def candidate_sizes(grid: Sequence[int], n_eligible: int) -> list[int]:
    """The grid's sizes up to the number of eligible codes, and that number itself when the grid goes
    past it (masking every eligible code is the largest mask the ranking can give)."""
    sizes = sorted({s for s in grid if 0 < s <= n_eligible})
    if n_eligible > 0 and (not sizes or sizes[-1] < n_eligible) and max(grid, default=0) > n_eligible:
        sizes.append(n_eligible)
    return sizes


def calibrate(
    sizes: Sequence[int],
    score: Callable[[int], Point],
    min_forget_drop: float,
    max_retain_drop: float,
    search: str = "bisect",
    describe: str = "",
    forget_margin: float = 0.0,
) -> Calibration:
    """The smallest size in `sizes` whose validation point clears both gates, with the forget gate
    raised by `forget_margin` where a size within the retain gate reaches it.

    Args:
        sizes: Candidate S' values, ascending (see `candidate_sizes`).
        score: Scores the mask of the top S' codes on validation rows.
        min_forget_drop, max_retain_drop: The gates, as promotion applies them on the test split.
        search: "bisect" (assumes drops grow with S', scores ~log2(len(sizes)) + 1 points) or "grid".
        describe: Said after the best point when nothing passes (e.g. "the topic has 140 forget examples").
        forget_margin: Headroom over the forget gate on validation, since the test split's drop scatters
            around the validation drop; where no size within the retain gate has it, the smallest size
            clearing the plain gates is chosen, so the margin never rejects a topic.
    """
    if search not in SEARCHES:
        raise ValueError(f"search={search!r}: use one of {', '.join(SEARCHES)}")
    if not sizes:
        return Calibration(None, [], "no code passes the mining thresholds, so there is no mask to try")
    scored: dict[int, Point] = {}

    def at(index: int) -> Point:
        size = sizes[index]
        if size not in scored:
            scored[size] = score(size)
        return scored[size]

    if search == "grid":
        for index in range(len(sizes)):
            at(index)
    else:
        aimed = _bisect(sizes, at, min_forget_drop + forget_margin)
        if at(aimed).failures(min_forget_drop + forget_margin, max_retain_drop):
            first_forgetting = _bisect(sizes, at, min_forget_drop)  # reuses the points scored so far
            if at(first_forgetting).retain_drop > max_retain_drop:
                _bisect_retain(first_forgetting, at, max_retain_drop)  # for the nearest miss
    frontier = [scored[s] for s in sorted(scored)]
    with_margin = [p for p in frontier if not p.failures(min_forget_drop + forget_margin, max_retain_drop)]
    passing = with_margin or [p for p in frontier if not p.failures(min_forget_drop, max_retain_drop)]
    if passing:
        return Calibration(passing[0], frontier, best=passing[0])
    best = _nearest_miss(frontier, max_retain_drop)
    return Calibration(None, frontier, _rejection(best, min_forget_drop, max_retain_drop, describe), best)


def _bisect(sizes: Sequence[int], at: Callable[[int], Point], min_forget_drop: float) -> int:
    """The index of the smallest size clearing the forget gate (the largest when none does)."""
    high = len(sizes) - 1
    if not at(high).forget_drop >= min_forget_drop:
        return high  # not even the largest mask forgets enough
    low = -1  # invariant: sizes[high] clears the forget gate, sizes[low] (if any) does not
    while high - low > 1:
        middle = (low + high) // 2
        if at(middle).forget_drop >= min_forget_drop:
            high = middle
        else:
            low = middle
    return high


def _bisect_retain(above: int, at: Callable[[int], Point], max_retain_drop: float) -> None:
    """Score the points that locate the largest size below index `above` within the retain gate."""
    low, high = -1, above  # invariant: sizes[high] breaks the retain gate, sizes[low] (if any) does not
    while high - low > 1:
        middle = (low + high) // 2
        if at(middle).retain_drop <= max_retain_drop:
            low = middle
        else:
            high = middle


def _nearest_miss(frontier: list[Point], max_retain_drop: float) -> Point:
    """The most forgetting point within the retain gate, else the least damaging one."""
    within_retain = [p for p in frontier if p.retain_drop <= max_retain_drop]
    if within_retain:
        return max(within_retain, key=lambda p: (_finite(p.forget_drop), -p.n_select))
    return min(frontier, key=lambda p: (-_finite(-p.retain_drop), p.n_select))


def _rejection(best: Point, min_forget_drop: float, max_retain_drop: float, describe: str) -> str:
    """'best validation point S' = 768: forget drop 0.52 < 0.8 at retain drop 0.05' and the context."""
    failures = "; ".join(best.failures(min_forget_drop, max_retain_drop))
    text = (
        f"best validation point S' = {best.n_select}: {failures} (forget drop {best.forget_drop:.3f}, "
        f"{best.forget_nats:+.3f} nats; retain drop {best.retain_drop:.3f}, {best.retain_nats:+.3f} nats)"
    )
    return f"{text}; {describe}" if describe else text


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def frontier_markdown(
    frontier: Sequence[Point], marked: int | None, mark: str, test: tuple[float, float] | None = None
) -> str:
    """Every S' scored on validation as a Markdown table, padded to read as plain text too: the row of
    S' = `marked` says `mark` (chosen, nearest miss), and `test` (held-out forget and retain drop of
    that S') stands beside its validation drops."""
    header = ["S'", "validation forget drop", "validation retain drop"]
    header += ["test forget drop", "test retain drop"] if test is not None else []
    rows = [header]
    for point in frontier:
        here = point.n_select == marked
        cells = [f"{point.n_select}" + (f" ({mark})" if here else "")]
        cells += [f"{point.forget_drop:.3f}", f"{point.retain_drop:.3f}"]
        if test is not None:
            cells += [f"{drop:.3f}" for drop in test] if here else ["", ""]
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "| "
        + " | ".join(
            [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]
        )
        + " |"
        for row in rows
    ]
    rule = "|:" + "-" * (widths[0] + 1) + "|" + "|".join("-" * (w + 1) + ":" for w in widths[1:]) + "|"
    return "\n".join([lines[0], rule, *lines[1:]])
