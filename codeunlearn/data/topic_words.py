"""A topic's words, and the keyword-free probe: held-out topic texts that contain none of them.

A drop in held-out forget NLL could come from the mask suppressing a few topic words rather than the
topic. The keyword-free split keeps the held-out forget examples (`forget_test`) that contain none of
the topic's words, matched as whole words in any case. A keyword or regex topic's words are its
pattern; every forget example matches it by construction, so there the split is empty. A label or
examples topic has no words given, so its most indicative words are ranked on the train side: the
forget set against the retain set, by smoothed log-odds of a text containing the word; a ranked
word also excludes its plural or singular by -s/-es.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from codeunlearn.core.config import WORD_TOPIC_KINDS, TopicConfig
from codeunlearn.data.corpus import content_hash

logger = logging.getLogger(__name__)

KEYWORD_FREE_COLUMN = "keyword_free"  # bool column of forget_test: the row is in the keyword-free split
# Letters only, two or more, bounded like a keyword_pattern match: numbers and one-letter tokens carry
# no topic, and a word counted here is found again by keyword_pattern.
WORD = re.compile(r"(?<!\w)[^\W\d_]{2,}(?!\w)")
# Add-one (Laplace) smoothing of each rate: a word absent from the other texts gets a finite score,
# and a word seen in few texts scores lower than one seen in many with the same ratio.
PSEUDO_COUNT = 1.0
# A word counts as the topic's only if its odds of occurring in a topic text are at least twice those
# in another text: where fewer words than asked mark the topic, function words that lean its way
# ("or", "in" at odds 1.2) would otherwise fill the list and leave hardly any text free of it.
MIN_LOG_ODDS = math.log(2.0)


@dataclass(frozen=True)
class WordScore:
    """How strongly a word marks the topic texts: counts are texts containing it, not occurrences."""

    word: str
    topic_count: int
    other_count: int
    log_odds: float  # log-odds of a topic text containing it minus that of another text


def keyword_pattern(keywords: Sequence[str]) -> re.Pattern[str]:
    """Any of `keywords` as whole words, in any case (blank ones ignored)."""
    words = sorted({k.strip() for k in keywords if k.strip()}, key=len, reverse=True)
    # Longest first so "ice cream" wins over "ice"; whitespace inside a keyword matches any spacing.
    alternatives = "|".join(r"\s+".join(map(re.escape, word.split())) for word in words)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def text_words(text: str) -> set[str]:
    """The distinct words of `text`, lowercased: runs of two or more letters."""
    return {word.lower() for word in WORD.findall(text)}


def rank_words(topic_texts: Sequence[str], other_texts: Sequence[str], min_count: int) -> list[WordScore]:
    """Words that mark the topic texts, best first.

    A word's score is logit(p_topic) - logit(p_other), where p = (texts containing it + 1) / (texts + 2)
    on each side. Texts, not occurrences, are counted, so one long text cannot make its words
    indicative. Ties go to the alphabetically first word, so the ranking is deterministic.

    Args:
        topic_texts: The topic's texts (e.g. the train forget split).
        other_texts: Texts of everything else (e.g. the train retain split).
        min_count: Topic texts a word must occur in to be ranked.

    Returns:
        The words scoring at least MIN_LOG_ODDS (log 2), best first.
    """
    topic_counts, other_counts = _text_counts(topic_texts), _text_counts(other_texts)
    scores = [
        WordScore(
            word,
            count,
            other_counts[word],
            _logit(count, len(topic_texts)) - _logit(other_counts[word], len(other_texts)),
        )
        for word, count in topic_counts.items()
        if count >= min_count
    ]
    return sorted((s for s in scores if s.log_odds >= MIN_LOG_ODDS), key=lambda s: (-s.log_odds, s.word))


def indicative_words(
    topic_texts: Sequence[str], other_texts: Sequence[str], n_words: int, min_count: int
) -> list[str]:
    """The `n_words` words that best mark the topic texts (see `rank_words`), best first."""
    return [score.word for score in rank_words(topic_texts, other_texts, min_count)[:n_words]]


def number_forms(words: Sequence[str]) -> list[str]:
    """The words with their plural or singular forms by -s/-es, sorted: "onions" finds "onion" too,
    so a text about an onion does not pass for free of the word "onions"."""
    forms = set(words)
    for word in words:
        forms |= {word + "s", word + "es"}
        if word.endswith("es") and len(word) > 3:
            forms.add(word[:-2])
        if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
            forms.add(word[:-1])
    return sorted(forms)


def keyword_free_flags(texts: Iterable[str], pattern: re.Pattern[str]) -> np.ndarray:
    """Per text, whether `pattern` (e.g. `keyword_pattern(words)`: whole words, any case) finds
    nothing in it."""
    return np.array([pattern.search(text) is None for text in texts], dtype=bool)


def keyword_free_rows(forget_test: pa.Table) -> np.ndarray:
    """Row indices of the keyword-free split within `forget_test`; none where the column is absent
    (splits prepared before the split existed)."""
    if KEYWORD_FREE_COLUMN not in forget_test.column_names:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.asarray(forget_test.column(KEYWORD_FREE_COLUMN).to_pylist(), dtype=bool))


def keyword_free_split(
    forget_train: pa.Table,
    retain_train: pa.Table,
    forget_test: pa.Table,
    topic: TopicConfig,
    topic_pattern: re.Pattern[str] | None,
) -> tuple[pa.Array, dict[str, Any]]:
    """Which held-out forget examples contain none of the topic's words, and the manifest entry.

    Args:
        forget_train: The train forget split, the topic side of the word ranking.
        retain_train: The train retain split, the other side of the ranking.
        forget_test: The held-out forget split to filter.
        topic: The topic: its kind, `keyword_free_words` and `keyword_free_min_count`.
        topic_pattern: A keyword or regex topic's pattern; None for other kinds.

    Returns:
        A bool array over `forget_test` rows, and the manifest entry: counts and a content hash, how
        the words were found, and the words themselves only for a label topic (a keyword topic's
        words and words drawn from a private examples file may be sensitive: only their hash).
    """
    texts = forget_test.column("text").to_pylist()
    if topic.kind in WORD_TOPIC_KINDS:
        flags = keyword_free_flags(texts, topic_pattern)
        entry: dict[str, Any] = {"words_from": "topic_pattern"}
    else:
        words = indicative_words(
            forget_train.column("text").to_pylist(),
            retain_train.column("text").to_pylist(),
            topic.keyword_free_words,
            topic.keyword_free_min_count,
        )
        # No words to be free of: the split would be forget_test again, which probes nothing new.
        pattern = keyword_pattern(number_forms(words)) if words else None
        flags = keyword_free_flags(texts, pattern) if pattern else np.zeros(len(texts), dtype=bool)
        entry = _ranked_entry(topic, words)
    kept = [text for text, keep in zip(texts, flags, strict=True) if keep]
    entry |= {"count": len(kept), "of": len(texts), "content_hash": content_hash(kept)}
    if kept:
        logger.info(
            "keyword-free split of %s: %d of %d held-out forget examples", topic.key, len(kept), len(texts)
        )
    else:
        entry["skipped"] = _skip_reason(topic, entry)
        # Expected for a word topic; for a label or examples topic it means the probe is missing.
        log = logger.info if topic.kind in WORD_TOPIC_KINDS else logger.warning
        log("keyword-free split of %s is empty: %s", topic.key, entry["skipped"])
    return pa.array(flags, type=pa.bool_()), entry


def _ranked_entry(topic: TopicConfig, words: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "words_from": "log_odds_forget_train_vs_retain_train",
        "max_words": topic.keyword_free_words,
        "min_count": topic.keyword_free_min_count,
        "n_words": len(words),
        "words_hash": hashlib.sha256(json.dumps(words).encode()).hexdigest(),
    }
    if topic.kind == "label":
        entry["words"] = words
    return entry


def _skip_reason(topic: TopicConfig, entry: dict[str, Any]) -> str:
    if topic.kind in WORD_TOPIC_KINDS:
        return (
            f"a {topic.kind} topic's forget examples all contain its words by construction, so none is "
            "keyword-free; only a label or examples topic has a keyword-free probe"
        )
    if not entry["n_words"]:
        return (
            f"no word occurs in topic.keyword_free_min_count={topic.keyword_free_min_count} train forget "
            "examples and more often than in the retain set: lower it, or add forget examples"
        )
    return (
        f"every held-out forget example contains one of the topic's {entry['n_words']} most indicative "
        "words: lower topic.keyword_free_words to keep some"
    )


def _text_counts(texts: Sequence[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(text_words(text))
    return counts


def _logit(count: int, total: int) -> float:
    rate = (count + PSEUDO_COUNT) / (total + 2 * PSEUDO_COUNT)
    return math.log(rate / (1 - rate))
