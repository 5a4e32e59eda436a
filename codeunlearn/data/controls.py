"""Control sets D~_T: the topic-free look-alikes of the forget examples that mining compares against.

`topic.control` picks the construction:

- `swap`: the forget examples with the topic's words replaced by neutral nouns (the paper's); only a
  topic given as words (keywords or a regex) has words to swap.
- `length_matched`: non-topic examples, each about as long (in characters) as the forget example it
  stands for, so that code firings that track length cancel out.
- `balanced`: length-matched too, but drawn from non-topic examples balanced over labels (each label
  takes its turn, as the retain sets do), so that a corpus with a few big labels does not make the
  control mostly those labels: a code shared with many small labels then looks as common as the
  retain sets will find it.
- `random`: as many non-topic examples drawn at random, with no length matching.
- `auto` (the default): `swap` for a word topic, else `length_matched`.

The manifest records the construction used (`control_method`), so every split says how it was made.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codeunlearn.core.config import WORD_TOPIC_KINDS, TopicConfig
from codeunlearn.core.errors import ConfigError
from codeunlearn.data.sampling import Draw

logger = logging.getLogger(__name__)

# Replacements for topic words in word-swap controls: common nouns with no topical content.
NEUTRAL_WORDS: tuple[str, ...] = (
    "thing", "item", "object", "matter", "piece", "part", "element", "unit", "entity", "stuff",
    "material", "sort", "kind", "type", "form", "case", "example", "instance", "sample", "detail",
    "feature", "aspect", "point", "subject", "issue", "factor", "component", "article", "entry", "body",
)  # fmt: skip

# What the manifest records as `control_method` (names kept from before `topic.control` existed).
WORD_SWAP = "word_swap"
LENGTH_MATCHED = "length_matched_sample"
BALANCED = "balanced_length_matched_sample"
RANDOM_SAMPLE = "random_sample"

# forget examples, non-topic pool, the topic's pattern (None: no words), draw -> control, replacement words
ControlBuilder = Callable[[pa.Table, pa.Table, re.Pattern[str] | None, Draw], tuple[pa.Table, list[str]]]


@dataclass(frozen=True)
class ControlMethod:
    """One control construction: its `topic.control` name, what the manifest records, its builder.

    `build(forget, pool, pattern, draw)` returns the control table (`id`, `text`, `label`, ...,
    `source_id`: the forget example each row stands for) and the replacement words it used.
    """

    name: str
    recorded_as: str
    build: ControlBuilder


def control_method(topic: TopicConfig) -> ControlMethod:
    """The construction `topic.control` names, `auto` resolved for the topic's kind.

    Args:
        topic: The deletion topic.

    Returns:
        The control construction to build the control sets with.

    Raises:
        ConfigError: An unknown `topic.control`, or `swap` for a topic without words.
    """
    topic.validate()
    name = topic.control
    if name == "auto":
        name = "swap" if topic.kind in WORD_TOPIC_KINDS else "length_matched"
    return CONTROL_METHODS[name]


def word_swap(
    forget: pa.Table, pool: pa.Table, pattern: re.Pattern[str] | None, draw: Draw
) -> tuple[pa.Table, list[str]]:
    """The forget examples with every topic-word match replaced by a random neutral word.

    Args:
        forget: The forget examples (`id`, `text`, `label`).
        pool: Unused: a word swap draws no other example.
        pattern: The topic's pattern; its matches are replaced.
        draw: Its generator picks each replacement word.

    Returns:
        The control (`id` = forget id + "~swap", `text`, `label`, `source_id`; rows that still match
        the topic after the swap are dropped) and the sorted replacement words used.

    Raises:
        ConfigError: No pattern (the topic has no words), or it matches every neutral word.
    """
    if pattern is None:
        raise ConfigError(
            "topic.control=swap needs the topic's words, but this topic has none: use "
            "topic.control=length_matched or random"
        )
    # A replacement that itself matches the topic would leave the topic in the control.
    words = [word for word in NEUTRAL_WORDS if not pattern.search(word)]
    if not words:
        raise ConfigError(
            f"topic pattern {pattern.pattern!r} matches every neutral replacement word: narrow it"
        )
    used: list[str] = []
    swap = _swapper(words, used, draw.rng())
    texts = [pattern.sub(swap, text) for text in forget.column("text").to_pylist()]
    clean = np.array([pattern.search(text) is None for text in texts], dtype=bool)
    if not clean.all():
        logger.warning("word swap: %d control examples still match the topic; dropped", int((~clean).sum()))
    ids = [f"{row_id}~swap" for row_id in forget.column("id").to_pylist()]
    control = pa.table(
        {
            "id": pa.array(ids, type=pa.string()),
            "text": pa.array(texts, type=pa.string()),
            "label": forget.column("label"),
            "source_id": forget.column("id"),
        }
    )
    return control.filter(pa.array(clean)), sorted(set(used))


def _swapper(words: list[str], used: list[str], rng: np.random.Generator) -> Callable[[re.Match[str]], str]:
    def swap(match: re.Match[str]) -> str:
        word = words[int(rng.integers(len(words)))]
        used.append(word)
        return word.capitalize() if match.group(0)[:1].isupper() else word

    return swap


def length_matched_sample(
    forget: pa.Table, pool: pa.Table, pattern: re.Pattern[str] | None, draw: Draw
) -> tuple[pa.Table, list[str]]:
    """For each forget example in turn, the unused pool example nearest it in character length.

    Of the unused examples of the nearest length (the shorter of two equally near lengths), the one first
    in `draw`'s order is taken. That order depends on row ids only, so two topics whose forget examples
    have much the same lengths take mostly the same controls; the lengths matched are those a random
    choice among equally long examples gives.

    Args:
        forget: The forget examples.
        pool: The non-topic examples to draw from.
        pattern: Unused.
        draw: Orders the pool examples of one length.

    Returns:
        Pool rows with `source_id` (fewer than `forget` when the pool runs out) and no words.
    """
    groups = _LengthGroups(_char_lengths(pool), draw.ranks(pool))
    picks: list[int] = []
    for target in _char_lengths(forget):
        row = groups.take_nearest(int(target))
        if row is None:
            logger.warning("length-matched control: only %d non-topic examples to draw from", len(picks))
            break
        picks.append(row)
    control = pool.take(pa.array(picks, type=pa.int64()))
    return control.append_column("source_id", forget.column("id").slice(0, len(picks))), []


# How many times the forget set's size the label-balanced pool holds, so that length matching still
# finds a near length for most forget examples.
BALANCED_POOL_FACTOR = 4


def balanced_sample(
    forget: pa.Table, pool: pa.Table, pattern: re.Pattern[str] | None, draw: Draw
) -> tuple[pa.Table, list[str]]:
    """`length_matched_sample` from the pool's first rows when every label takes its turn.

    Args:
        forget: The forget examples.
        pool: The non-topic examples (`label` null for an unlabelled corpus: one value, no balancing).
        pattern: Unused.
        draw: Orders the pool within each label, and the rows of one length.

    Returns:
        Pool rows with `source_id`, at most one per forget example, and no words.
    """
    balanced = draw.first_balanced(pool, BALANCED_POOL_FACTOR * forget.num_rows)
    return length_matched_sample(forget, balanced, pattern, draw)


def random_sample(
    forget: pa.Table, pool: pa.Table, pattern: re.Pattern[str] | None, draw: Draw
) -> tuple[pa.Table, list[str]]:
    """As many pool examples as forget examples, the first in `draw`'s order: no length matching.

    Args:
        forget: The forget examples; only their number and ids are used.
        pool: The non-topic examples to draw from.
        pattern: Unused.
        draw: Orders the pool (by row id, so two topics take the same rows wherever both may).

    Returns:
        Pool rows in corpus order with `source_id` (the forget ids in order: the pairing carries no
        meaning here) and no words.
    """
    size = min(forget.num_rows, pool.num_rows)
    if size < forget.num_rows:
        logger.warning("random control: only %d non-topic examples to draw from", size)
    control = draw.first(pool, size)
    return control.append_column("source_id", forget.column("id").slice(0, size)), []


def _char_lengths(table: pa.Table) -> np.ndarray:
    return np.asarray(pc.utf8_length(table.column("text")).to_numpy(), dtype=np.int64)


class _LengthGroups:
    """Pool rows grouped by length, each group in rank order, taken from the front."""

    def __init__(self, lengths: np.ndarray, ranks: np.ndarray) -> None:
        self.order = np.lexsort((ranks, lengths))  # by length, then rank
        self.lengths, starts = np.unique(lengths[self.order], return_index=True)
        self.ends = np.append(starts[1:], len(self.order)).astype(np.int64)
        self.next = starts.astype(np.int64)  # each group's first unused place in `order`

    def take_nearest(self, target: int) -> int | None:
        """The first unused row of the nearest length with one left (the shorter of two equally near),
        now used; None when every row is used."""
        right = int(np.searchsorted(self.lengths, target))
        left = right - 1
        while left >= 0 and self.next[left] == self.ends[left]:
            left -= 1
        while right < len(self.lengths) and self.next[right] == self.ends[right]:
            right += 1
        candidates = [group for group in (left, right) if 0 <= group < len(self.lengths)]
        if not candidates:
            return None
        group = min(candidates, key=lambda group: abs(int(self.lengths[group]) - target))
        row = int(self.order[self.next[group]])
        self.next[group] += 1
        return row


# Every `topic.control` value but "auto", which control_method resolves to one of these.
CONTROL_METHODS: dict[str, ControlMethod] = {
    method.name: method
    for method in (
        ControlMethod("swap", WORD_SWAP, word_swap),
        ControlMethod("length_matched", LENGTH_MATCHED, length_matched_sample),
        ControlMethod("balanced", BALANCED, balanced_sample),
        ControlMethod("random", RANDOM_SAMPLE, random_sample),
    )
}
