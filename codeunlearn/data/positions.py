"""Which token positions mining counts: all content tokens, or only those of a word topic's words.

A word-swap control differs from its forget example only where the topic words were swapped for
neutral ones, so over whole texts the two sets share almost every code firing and few codes pass the
significance test. Counting only the swapped positions (the topic words in D_T, their replacements in
the control) compares like with like: what the model makes of "kernel" against what it makes of a
neutral word in the same place. This module finds those positions as character spans and maps them
onto token positions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from codeunlearn.core.errors import CodeunlearnError

Span = tuple[int, int]  # [start, end) character offsets


def topic_word_spans(text: str, pattern: re.Pattern[str]) -> list[Span]:
    """Character spans of every match of the topic pattern in `text`."""
    return [match.span() for match in pattern.finditer(text) if match.end() > match.start()]


def swapped_spans(original: str, swapped: str, pattern: re.Pattern[str]) -> list[Span]:
    """Spans in `swapped` of the words that replaced the pattern's matches in `original`.

    `swapped` must be `original` with each match replaced by some word (the word-swap control): the
    text between matches is unchanged, which is what locates each replacement.

    Raises:
        CodeunlearnError: `swapped` is not such a swap of `original`.
    """
    matches = topic_word_spans(original, pattern)
    spans: list[Span] = []
    cursor, previous_end = 0, 0  # where the next unchanged stretch starts in `swapped` / `original`
    for index, (start, end) in enumerate(matches):
        cursor += start - previous_end
        next_start = matches[index + 1][0] if index + 1 < len(matches) else len(original)
        following = original[end:next_start]
        if following:
            resume = swapped.find(following, cursor + 1)
        else:  # a match at the end runs to the end; two matches back to back cannot be told apart
            resume = len(swapped) if index + 1 == len(matches) else -1
        if resume < 0:
            break
        spans.append((cursor, resume))
        cursor, previous_end = resume, end
    if len(spans) != len(matches) or _splice(original, matches, swapped, spans) != swapped:
        raise CodeunlearnError(
            "a control example is not its forget example with the topic words swapped, so the swapped "
            "positions cannot be found: rebuild the splits, or use mining.positions=all"
        )
    return spans


def _splice(original: str, matches: Sequence[Span], swapped: str, spans: Sequence[Span]) -> str:
    """`original` with each match replaced by the text of `swapped` at the corresponding span."""
    pieces, previous_end = [], 0
    for (start, end), (span_start, span_end) in zip(matches, spans, strict=True):
        pieces += [original[previous_end:start], swapped[span_start:span_end]]
        previous_end = end
    return "".join([*pieces, original[previous_end:]])


def split_spans(forget: pa.Table, control: pa.Table, pattern: re.Pattern[str]) -> dict[str, list[list[Span]]]:
    """Per example of each set, the spans mining counts: the topic words of each forget text, and
    the replacement words of each control text (found through its `source_id`)."""
    forget_texts = dict(zip(forget["id"].to_pylist(), forget["text"].to_pylist(), strict=True))
    spans = {"forget": [topic_word_spans(text, pattern) for text in forget["text"].to_pylist()]}
    if "source_id" not in control.column_names:
        raise CodeunlearnError(
            "mining.positions=topic_words needs a word-swap control (a `source_id` per control example); "
            "this control set has none: rebuild the splits with a keyword or regex topic"
        )
    spans["control"] = [
        swapped_spans(forget_texts[source], text, pattern) if source in forget_texts else []
        for source, text in zip(control["source_id"].to_pylist(), control["text"].to_pylist(), strict=True)
    ]
    return spans


def token_flags(
    tokenizer: Any, texts: Sequence[str], spans: Sequence[Sequence[Span]], lead: int = 0
) -> list[list[bool]]:
    """Per text, one flag per token of `tokenizer(text)`: True where the token overlaps a span.

    `lead` is the number of tokens the caller puts in front of each text's own tokens (BOS), which
    are never flagged. Needs a fast tokenizer (character offsets).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise CodeunlearnError(
            "mining.positions=topic_words needs a fast tokenizer (character offsets); "
            "this model's tokenizer is a slow one: use mining.positions=all"
        )
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    flags = []
    for offsets, text_spans in zip(encoded["offset_mapping"], spans, strict=True):
        flags.append(
            [False] * lead
            + [
                any(start < span_end and span_start < end for span_start, span_end in text_spans)
                for start, end in offsets
            ]
        )
    return flags
