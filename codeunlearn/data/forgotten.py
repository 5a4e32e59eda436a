"""Topics already forgotten, left out of a new topic's retain sets.

The active mask damages the rows of every topic it already forgets, on purpose. A new topic's retain
drop is measured beside that mask, so a retain set holding those rows would count the earlier
forgetting as the new topic's collateral damage, and the first deletion would use up the retain budget
of every later one. The validation and test retain pools therefore leave out every row of a topic the
active mask's other sources forget, matched as that topic's own forget rows are matched
(codeunlearn.data.topic_rows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from codeunlearn.core.config import TopicConfig
from codeunlearn.data.topic_rows import topic_rows

logger = logging.getLogger(__name__)

REQUEST_SOURCE_PREFIX = "req-"  # a deletion request's id, and the name of its source in a mask
# The kinds whose `TopicConfig.key` is a hash: another topic of these kinds cannot be rebuilt from it.
_HASHED_KEY_PREFIXES = ("keywords-", "regex-", "examples_file-")
_CLEARED = {"label": None, "keywords": (), "regex": None, "examples_file": None}


@dataclass(frozen=True)
class RetainPools:
    """The rows a topic's validation and test retain sets are drawn from, forgotten topics left out,
    and a manifest entry per forgotten topic: its kind, its key and the rows it took out of each pool.
    A label topic's key is its label; any other's is a hash, never its words, pattern or file."""

    val: pa.Table
    test: pa.Table
    excluded: list[dict[str, Any]]


def without_forgotten(val: pa.Table, test: pa.Table, forgotten: Iterable[TopicConfig]) -> RetainPools:
    """The two retain pools without any row of a forgotten topic.

    Raises:
        ConfigError: A forgotten topic with a bad pattern, or a label topic on a corpus without labels.
        MissingAssetError: A forgotten topic's examples file does not exist.
    """
    excluded = []
    for topic in forgotten:
        in_val, in_test = topic_rows(val, topic), topic_rows(test, topic)
        removed = {"retain_val": pc.sum(in_val).as_py() or 0, "retain_test": pc.sum(in_test).as_py() or 0}
        val, test = val.filter(pc.invert(in_val)), test.filter(pc.invert(in_test))
        excluded.append({"kind": topic.kind, "key": topic.key, "removed": removed})
        logger.debug("retain pools: %s already forgotten, %s of its rows left out", topic.key, removed)
    if excluded:
        total = sum(sum(entry["removed"].values()) for entry in excluded)
        logger.info("retain pools: %d rows of %d forgotten topic(s) left out", total, len(excluded))
    return RetainPools(val, test, excluded)


def source_topics(
    names: Iterable[str],
    caps: TopicConfig,
    own: str,
    request_topic: Callable[[str], TopicConfig | None] | None = None,
) -> tuple[TopicConfig, ...]:
    """The topics that a mask's sources (by name) forget, `own` left out, each with the caps of `caps`.

    A pipeline source is named by its topic's key: `caps`'s own key gives `caps`'s topic, any other
    key that is not a hash is a label. A request source (`req-...`) is resolved by `request_topic`,
    which returns None for a request whose topic cannot be rebuilt. A source that cannot be resolved
    is skipped with a log line: its rows stay in the retain sets.
    """
    topics: dict[str, TopicConfig] = {}  # by key: two requests for one label forget the same rows
    for name in names:
        if name == own:
            continue
        if name.startswith(REQUEST_SOURCE_PREFIX):
            topic = request_topic(name) if request_topic is not None else None
        else:
            topic = _pipeline_topic(name, caps)
        if topic is None:
            logger.warning(
                "active mask source %s: its topic cannot be rebuilt, so its rows stay in the retain sets",
                name,
            )
            continue
        topics.setdefault(topic.key, topic)
    return tuple(topics.values())


def _pipeline_topic(key: str, caps: TopicConfig) -> TopicConfig | None:
    if key == caps.key:
        return caps
    if key.startswith(_HASHED_KEY_PREFIXES):
        return None
    return replace(caps, **{**_CLEARED, "label": key})
