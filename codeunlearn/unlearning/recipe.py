"""The mask recipe: a topic on a codebook model becomes a mask with its evidence.

detector (optional) -> count code firings per split -> select S' codes -> mask. Every caller (the
stage chain, deletion requests, the comparison against baselines, the translation setting) turns its
topic into a mask here, so a change to how masks are made is made once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from codeunlearn.core.config import MiningConfig, RunConfig, TopicConfig
from codeunlearn.data.batching import Batch
from codeunlearn.data.positions import Span, split_spans
from codeunlearn.data.tables import batch_texts, train_side_texts
from codeunlearn.data.topics import Splits, topic_pattern
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.unlearning.masks import Mask, mask_from_codes
from codeunlearn.unlearning.mining import count_codes
from codeunlearn.unlearning.selection import CodeCounts, SelectedCodes, select_codes
from codeunlearn.unlearning.topic_detector import (
    PromptSet,
    TopicDetector,
    fit_prompt_detector,
    fit_text_detector,
    prompt_features,
)

SPLITS = ("forget", "control", "retain")  # counted in this order; retain only when given


@dataclass(frozen=True)
class DetectorData:
    """What a topic detector is fitted on: the topic's texts against other texts (or their
    `prompt_set`, computed once for several detectors); on the texts' prompts, or on the whole texts
    for bottleneck.mask_condition=text."""

    topic_texts: Sequence[str]
    others: Sequence[str] | PromptSet
    max_length: int
    seed: int = 0
    whole_texts: bool = False


@dataclass(frozen=True)
class TopicBatches:
    """The batches codes are counted on: the forget and control sets, and optionally the retain set
    (counted for the code store's later queries, never used to select)."""

    forget: list[Batch]
    control: list[Batch]
    retain: list[Batch] | None = None

    def named(self) -> dict[str, list[Batch]]:
        return {name: batches for name in SPLITS if (batches := getattr(self, name)) is not None}


@dataclass(frozen=True)
class MinedMask:
    """A mask of one source and the evidence it was chosen on."""

    mask: Mask
    counts: dict[str, CodeCounts]
    selected: SelectedCodes
    ranked: list[int]  # every eligible code, best first (ties by lower id): calibration and sweeps read it
    detector: TopicDetector | None = None
    provenance: dict[str, str] = field(default_factory=dict)


def detector_data(
    config: RunConfig,
    topic_texts: Sequence[str] | None = None,
    others: PromptSet | None = None,
    splits: Splits | None = None,
) -> DetectorData | None:
    """The texts the topic's detector is fitted on, when mining.detector_recall > 0: `topic_texts`
    (default: every training text of the topic) against `others` (default: mining.detector_negatives
    training texts outside the topic, drawn with the run's seed).

    A text detector (bottleneck.mask_condition=text) with the topic's `splits` given is fitted on
    mining's own texts of the topic (forget_train) and leaves the validation rows out of the others,
    so that calibration judges it on texts it never saw."""
    if not config.mining.detector_recall:
        return None
    whole = config.bottleneck.mask_condition == "text"
    if whole and splits is not None and topic_texts is None:
        topic_texts = splits.forget_train.column("text").to_pylist()
    if topic_texts is None or others is None:
        topic_side, other_side = train_side_texts(config, config.mining.detector_negatives)
        topic_texts = topic_side if topic_texts is None else topic_texts
        if others is None and whole and splits is not None:
            held = set(splits.retain_val.column("text").to_pylist())
            other_side = [text for text in other_side if text not in held]
        others = other_side if others is None else others
    return DetectorData(topic_texts, others, config.data.max_length, config.seed, whole_texts=whole)


def counted_spans(mining: MiningConfig, topic: TopicConfig, splits: Splits) -> dict[str, list[list[Span]]]:
    """The forget and control spans mining counts under mining.positions=topic_words; else none."""
    if mining.positions != "topic_words":
        return {}
    return split_spans(splits.forget_train, splits.control_train, topic_pattern(topic))


def topic_batches(
    mining: MiningConfig,
    topic: TopicConfig,
    max_length: int,
    splits: Splits,
    tokenizer,
    with_retain: bool = False,
) -> TopicBatches:
    """The training side of the forget and control sets (and the retain set) batched for counting
    (texts cut at `max_length`, the run's data.max_length), at the positions mining.positions names."""
    spans = counted_spans(mining, topic, splits)

    def batches(split: str) -> list[Batch]:
        texts = getattr(splits, f"{split}_train").column("text").to_pylist()
        return batch_texts(texts, tokenizer, max_length, mining.batch_size, spans.get(split))

    return TopicBatches(batches("forget"), batches("control"), batches("retain") if with_retain else None)


def fit_detector(
    codebook_model: CodebookModel, mining: MiningConfig, data: DetectorData | None
) -> TopicDetector | None:
    """The topic's detector (of prompts, or of whole texts) when mining.detector_recall > 0 (and data
    is given), else None.

    Raises:
        CodeunlearnError: the topic's texts have too few prompts (see `fit_prompt_detector`).
    """
    if not mining.detector_recall or data is None:
        return None
    if data.whole_texts:
        others = data.others
        other_features = (
            others.features
            if isinstance(others, PromptSet)
            else prompt_features(codebook_model, others, data.max_length)
        )
        topic_features = prompt_features(codebook_model, data.topic_texts, data.max_length)
        return fit_text_detector(topic_features, other_features, mining.detector_recall, seed=data.seed)
    return fit_prompt_detector(
        codebook_model, data.topic_texts, data.others, mining.detector_recall, data.max_length, seed=data.seed
    )


def rank_eligible(forget: CodeCounts, control: CodeCounts, mining: MiningConfig) -> list[int]:
    """Every code the selection rule finds eligible, best first, ties by lower code id."""
    eligible = select_codes(forget, control, replace(mining, n_select=0))
    order = np.lexsort((eligible.code_ids, -eligible.scores))
    return eligible.code_ids[order].tolist()


def mine_mask(
    codebook_model: CodebookModel,
    name: str,
    batches: TopicBatches,
    mining: MiningConfig,
    detector_data: DetectorData | None = None,
    on_counts: Callable[[str, CodeCounts], None] | None = None,
    **provenance: str,
) -> MinedMask:
    """Mine the topic's codes and mask them: the one recipe every caller uses.

    The detector is fitted first, so a topic it cannot serve stops before any count is recorded.

    Args:
        codebook_model: The trained codebook model, served as configured.
        name: The mask source's name (a topic or request id).
        batches: The forget, control and optional retain batches to count codes on.
        mining: Selection rule, thresholds and S' (`n_select`), and the detector's recall.
        detector_data: The texts a prompt detector is fitted on, when mining.detector_recall > 0.
        on_counts: Called with (split, counts) after each split is counted (to store them).
        **provenance: Recorded on the mask source (data_hash, counts_run).

    Returns:
        The mask of this one source (not combined with any active mask) and its evidence.
    """
    detector = fit_detector(codebook_model, mining, detector_data)
    counts = {}
    for split, split_batches in batches.named().items():
        counts[split] = count_codes(codebook_model, split_batches, desc=f"mining {split}")
        if on_counts is not None:
            on_counts(split, counts[split])
    selected = select_codes(counts["forget"], counts["control"], mining)
    mask = mask_from_codes(
        codebook_model.bottleneck.n_codes,
        name,
        selected.code_ids.tolist(),
        detector=detector,
        rule=selected.rule,
        **provenance,
    )
    ranked = rank_eligible(counts["forget"], counts["control"], mining)
    return MinedMask(mask, counts, selected, ranked, detector, dict(provenance))


def with_source(active: Mask, new: Mask) -> Mask:
    """`active` with `new`'s sources added, each replacing an earlier source of the same name."""
    for source in new.sources:
        if source.name in {s.name for s in active.sources}:
            active = active.without(source.name)
    return active.union(new)
