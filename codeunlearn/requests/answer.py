"""How a request was answered, as its record, its MLflow run and `codeunlearn request show` give it: the
S' calibration chose, every S' it scored on the validation split, and the held-out test result of the
mask version the request was promoted or failed on."""

from __future__ import annotations

import math

from codeunlearn.evaluation.outcome import TopicOutcome
from codeunlearn.requests.queue import OPEN_STATUSES, DeletionRequest
from codeunlearn.unlearning.calibration import Calibration, frontier_markdown

# the request fields `describe` tells (the record keeps them as columns of their own)
ANSWER_FIELDS = ("chosen_n_select", "frontier", "test_forget_drop", "test_retain_drop")


class NoPassingSize(Exception):
    """Calibration found no S' that clears both gates on the request's validation split."""

    def __init__(self, calibration: Calibration) -> None:
        super().__init__(calibration.reason)
        self.calibration = calibration


def calibration_fields(calibration: Calibration | None) -> dict[str, object]:
    """The request fields of a calibration (None: calibration is off, so no S' was chosen or scored)."""
    if calibration is None:
        return {"chosen_n_select": None, "frontier": ()}
    chosen = calibration.chosen.n_select if calibration.chosen else None
    return {"chosen_n_select": chosen, "frontier": tuple(calibration.frontier)}


def test_fields(outcome: TopicOutcome) -> dict[str, float]:
    return {"test_forget_drop": outcome.forget_drop, "test_retain_drop": outcome.retain_drop}


def calibration_params(calibration: Calibration) -> dict[str, str]:
    """MLflow params of the request's run: the S' chosen ("none" when no size passed), sizes scored."""
    chosen = calibration.chosen.n_select if calibration.chosen else "none"
    return {"chosen_n_select": str(chosen), "calibration_sizes_scored": str(len(calibration.frontier))}


def calibration_metrics(calibration: Calibration | None) -> dict[str, float]:
    """MLflow metrics of the request's run: sizes scored, and the chosen S' with its validation drops
    (to set beside the test split's forget_drop and retain_drop)."""
    if calibration is None:
        return {}
    metrics = {"calibration_sizes_scored": float(len(calibration.frontier))}
    if calibration.chosen is not None:
        metrics |= {
            "chosen_n_select": float(calibration.chosen.n_select),
            "val_forget_drop": calibration.chosen.forget_drop,
            "val_retain_drop": calibration.chosen.retain_drop,
        }
    return metrics


def describe(request: DeletionRequest) -> list[str]:
    """The lines `codeunlearn request show` prints after the request's fields."""
    tested = request.test_forget_drop is not None
    test = (request.test_forget_drop, _number(request.test_retain_drop)) if tested else None
    frontier = request.frontier
    if frontier is None:
        said = "not answered yet" if request.status in OPEN_STATUSES else "none recorded"
        return [f"{'calibration':14s} {said}"]
    if not frontier:
        said = "off (calibration.grid is empty): the mask holds the mined S'" if tested else "no S' to try"
        lines = [f"{'calibration':14s} {said}"]
        if test is not None:
            lines.append(f"{'test':14s} forget drop {test[0]:.3f}, retain drop {test[1]:.3f} (held-out)")
        return lines
    chosen = request.chosen_n_select
    scored = f"{len(frontier)} size{'s' if len(frontier) != 1 else ''} scored"
    if chosen is None:
        return [
            f"{'calibration':14s} no S' clears both gates on the validation split ({scored})",
            frontier_markdown(frontier, None, ""),
        ]
    lines = [
        f"{'calibration':14s} S' = {chosen} chosen on the validation split ({scored})",
        frontier_markdown(frontier, chosen, "chosen", test),
    ]
    point = next((p for p in frontier if p.n_select == chosen), None)
    if test is not None and point is not None:
        lines.append(
            f"{'test':14s} at S' = {chosen}: forget drop {test[0]:.3f} (validation {point.forget_drop:.3f}), "
            f"retain drop {test[1]:.3f} (validation {point.retain_drop:.3f}) on the held-out test split"
        )
    return lines


def _number(value: float | None) -> float:
    return math.nan if value is None else value
