"""A topic's mask calibrated on its validation split and scored on its held-out test split.

Calibration sees only the validation rows (the train side, kept out of mining); the test rows are
scored once, for the chosen size, and decide promotion. Both read the same `TextPool`, so a text
shared by two requests or two topics of a sweep is run through the lower layers once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from codeunlearn.core.config import CalibrationConfig
from codeunlearn.data.topic_words import keyword_free_rows
from codeunlearn.data.topics import Splits
from codeunlearn.evaluation.evaluator import KEYWORD_FREE, normalized_drop
from codeunlearn.evaluation.text_pool import TextPool
from codeunlearn.unlearning.calibration import Calibration, Point, calibrate, candidate_sizes
from codeunlearn.unlearning.masks import Mask, mask_from_codes
from codeunlearn.unlearning.selection import random_codes

VARIANTS = ("base", "codebook", "masked", "random")


@dataclass(frozen=True)
class HeldOut:
    """Ids of a topic's forget and retain rows of one side (validation or test)."""

    forget: list[str]
    retain: list[str]
    keyword_free: list[str] = field(default_factory=list)  # forget rows with none of the topic's words

    @property
    def ids(self) -> list[str]:
        return [*self.forget, *self.retain]

    @classmethod
    def of(cls, forget: pa.Table, retain: pa.Table) -> HeldOut:
        forget_ids = [str(i) for i in forget.column("id").to_pylist()]
        free = keyword_free_rows(forget)
        return cls(
            forget_ids, [str(i) for i in retain.column("id").to_pylist()], [forget_ids[i] for i in free]
        )


def validation_of(splits: Splits) -> HeldOut:
    return HeldOut.of(splits.forget_val, splits.retain_val)


def test_of(splits: Splits) -> HeldOut:
    return HeldOut.of(splits.forget_test, splits.retain_test)


def texts_of(splits: Splits) -> dict[str, str]:
    """Id -> text of every validation and test row, for `TextPool.add`."""
    texts: dict[str, str] = {}
    for name in ("forget_val", "retain_val", "forget_test", "retain_test"):
        table = getattr(splits, name)
        texts.update(
            zip(map(str, table.column("id").to_pylist()), table.column("text").to_pylist(), strict=True)
        )
    return texts


def top_mask(
    ranked: Sequence[int], size: int, n_codes: int, name: str, rule: str = "", **provenance: str
) -> Mask:
    """The mask of the `size` best-ranked codes."""
    return mask_from_codes(n_codes, name, list(ranked[:size]), rule=rule, **provenance)


def score_held_out(pool: TextPool, held_out: HeldOut, mask: Mask | None, random: Mask | None = None) -> dict:
    """Mean NLL per variant (base, codebook, and masked / random when given) and split (forget,
    retain, and the keyword-free forget rows when there are any)."""
    splits = {"forget": held_out.forget, "retain": held_out.retain}
    if held_out.keyword_free:
        splits[KEYWORD_FREE] = held_out.keyword_free
    nll: dict[str, dict[str, float]] = {"base": {}, "codebook": {}}
    for split, ids in splits.items():
        nll["base"][split] = pool.base(ids).mean()
        nll["codebook"][split] = pool.codebook(ids).mean()
    for variant, edit in (("masked", mask), ("random", random)):
        if edit is not None:
            nll[variant] = {split: pool.masked(ids, edit).mean() for split, ids in splits.items()}
    return nll


def validation_point(pool: TextPool, validation: HeldOut, mask: Mask, size: int) -> Point:
    nll = score_held_out(pool, HeldOut(validation.forget, validation.retain), mask)

    def drop(split: str) -> float:
        return normalized_drop(nll["base"][split], nll["codebook"][split], nll["masked"][split])

    return Point(
        n_select=size,
        forget_drop=drop("forget"),
        retain_drop=drop("retain"),
        forget_nats=nll["masked"]["forget"] - nll["codebook"]["forget"],
        retain_nats=nll["masked"]["retain"] - nll["codebook"]["retain"],
    )


def calibrate_size(
    pool: TextPool,
    validation: HeldOut,
    ranked: Sequence[int],
    n_codes: int,
    calibration: CalibrationConfig,
    min_forget_drop: float,
    max_retain_drop: float,
    describe: str = "",
) -> Calibration:
    """Choose S' for one topic from its validation rows (see codeunlearn.unlearning.calibration)."""
    return calibrate(
        candidate_sizes(calibration.grid, len(ranked)),
        lambda size: validation_point(pool, validation, top_mask(ranked, size, n_codes, "calibration"), size),
        min_forget_drop,
        max_retain_drop,
        calibration.search,
        describe,
    )


def random_control(mask: Mask, seed: int) -> Mask:
    """Random codes, as many as `mask` holds and none of them, for the random-mask control."""
    codes = random_codes(mask.n_codes, len(mask.code_ids), seed, np.asarray(mask.code_ids, dtype=np.int64))
    return mask_from_codes(mask.n_codes, "random", codes.tolist())
