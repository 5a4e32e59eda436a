"""A topic's mask calibrated on its validation split and scored on its held-out test split.

Calibration sees only the validation rows (the train side, kept out of mining); the test rows are
scored once, for the chosen size, and decide promotion. Both read the same `TextPool`, so a text
shared by two requests or two topics of a sweep is run through the lower layers once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pyarrow as pa
from torch import nn

from codeunlearn.core.config import CalibrationConfig, GatesConfig
from codeunlearn.data.topic_words import keyword_free_rows
from codeunlearn.data.topics import Splits
from codeunlearn.evaluation.evaluator import KEYWORD_FREE, normalized_drop
from codeunlearn.evaluation.text_pool import TextPool
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.unlearning.calibration import Calibration, Point, calibrate, candidate_sizes
from codeunlearn.unlearning.masks import Mask, mask_from_codes
from codeunlearn.unlearning.recipe import MinedMask, with_source
from codeunlearn.unlearning.topic_detector import TopicDetector

LOWER_FROZEN = ("frozen", "above")  # training modes that leave the layers below the bottleneck as the base's


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


def table_texts(table: pa.Table) -> dict[str, str]:
    """Id -> text of a split table's rows, for `TextPool.add`."""
    return dict(zip(map(str, table.column("id").to_pylist()), table.column("text").to_pylist(), strict=True))


def texts_of(splits: Splits, sides: tuple[str, ...] = ("val", "test")) -> dict[str, str]:
    """Id -> text of every row of the validation and/or test side, for `TextPool.add`."""
    texts: dict[str, str] = {}
    for name in (f"{split}_{side}" for side in sides for split in ("forget", "retain")):
        texts.update(table_texts(getattr(splits, name)))
    return texts


def top_mask(
    ranked: Sequence[int],
    size: int,
    n_codes: int,
    name: str,
    rule: str = "",
    detector: TopicDetector | None = None,
    **provenance: str,
) -> Mask:
    """The mask of the `size` best-ranked codes (with the topic's detector, when it has one)."""
    return mask_from_codes(n_codes, name, list(ranked[:size]), rule=rule, detector=detector, **provenance)


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
    active: Mask | None = None,
    detector: TopicDetector | None = None,
) -> Calibration:
    """Choose S' for one topic from its validation rows (see codeunlearn.unlearning.calibration); each
    size is scored with the `active` mask in force beside it, as it would be served, and with the
    topic's `detector` (bottleneck.mask_condition=text reads it)."""

    def mask_of(size: int) -> Mask:
        own = top_mask(ranked, size, n_codes, "calibration", detector=detector)
        return with_source(active, own) if active is not None and active.sources else own

    return calibrate(
        candidate_sizes(calibration.grid, len(ranked)),
        lambda size: validation_point(pool, validation, mask_of(size), size),
        min_forget_drop,
        max_retain_drop,
        calibration.search,
        describe,
        calibration.forget_margin,
    )


def sized(mined: MinedMask, size: int) -> Mask:
    """The mined mask's source cut to its `size` best-ranked codes (detector and provenance kept)."""
    (source,) = mined.mask.sources
    return Mask(mined.mask.n_codes, (replace(source, code_ids=tuple(sorted(mined.ranked[:size]))),))


def held_out_pool(
    codebook_model: CodebookModel, base_model: nn.Module, max_length: int, batch_size: int, train_mode: str
) -> TextPool:
    """An empty pool for the run's model: texts cut at `max_length` (data.max_length) and scored
    `batch_size` at a time (eval.batch_size), base scores from the shared lower layers when training
    (`train_mode`, train.mode) left them as the base model's."""
    return TextPool(
        codebook_model,
        base_model,
        max_length,
        batch_size,
        shared_lower=train_mode in LOWER_FROZEN,
    )


def calibrate_topic(
    pool: TextPool,
    validation: HeldOut,
    ranked: Sequence[int],
    n_codes: int,
    calibration: CalibrationConfig,
    gates: GatesConfig,
    n_mined: int,
    active: Mask | None = None,
    detector: TopicDetector | None = None,
) -> Calibration:
    """`calibrate_size` with the config's grid and gates, its rejection told in the topic's numbers."""
    return calibrate_size(
        pool,
        validation,
        ranked,
        n_codes,
        calibration,
        gates.min_forget_drop,
        gates.max_retain_drop,
        describe=f"the topic has {n_mined} forget examples to mine and {len(validation.forget)} to "
        f"validate on, {len(ranked)} eligible codes",
        active=active,
        detector=detector,
    )
