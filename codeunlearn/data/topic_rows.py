"""Which corpus rows are a topic's: rows with the topic's label, rows matching its keywords or regex, or
the examples of an examples file, cut out on each side of the train/test partition. A topic that
matches nothing on a side is an error that says what was tried and what the corpus holds.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codeunlearn.core.config import WORD_TOPIC_KINDS, TopicConfig
from codeunlearn.core.errors import CodeunlearnError, ConfigError, MissingAssetError
from codeunlearn.data.corpus import TABLE_SUFFIXES, id_fraction, read_table_file
from codeunlearn.data.topic_words import keyword_pattern

logger = logging.getLogger(__name__)

EXAMPLES_TEST_FRACTION = 0.2  # share of an examples file held out as the test side
TEXT_SUFFIXES = ("", ".txt", ".text")  # an examples file read as UTF-8 text, one example per line


@dataclass(frozen=True)
class TopicSide:
    """One side (train or test) of the corpus cut into the topic's rows and the other rows."""

    topic: pa.Table
    other: pa.Table


def topic_sides(
    train: pa.Table, test: pa.Table, topic: TopicConfig, pattern: re.Pattern[str] | None
) -> tuple[TopicSide, TopicSide]:
    """Each side of the corpus cut into the topic's rows and the others; both must hold the topic."""
    if topic.kind == "examples_file":
        train_side, test_side = _example_sides(topic, train, test)
    else:
        train_side, test_side = _cut(train, topic, pattern), _cut(test, topic, pattern)
    _check_matches(topic, train_side, test_side)
    return train_side, test_side


def topic_pattern(topic: TopicConfig) -> re.Pattern[str]:
    """The compiled pattern of a keyword or regex topic (keywords as whole words, any case)."""
    if topic.kind == "keywords":
        if not any(k.strip() for k in topic.keywords):
            raise ConfigError(f"topic.keywords={list(topic.keywords)!r} holds only blanks: give real words")
        return keyword_pattern(topic.keywords)
    try:
        pattern = re.compile(str(topic.regex), re.IGNORECASE)
    except re.error as error:
        raise ConfigError(
            f"topic.regex={topic.regex!r} is not a valid regular expression ({error}): "
            "fix it (Python `re` syntax)"
        ) from error
    if pattern.search(""):
        raise ConfigError(
            f"topic.regex={topic.regex!r} matches the empty string, so it would match every example: "
            "make it require at least one character"
        )
    return pattern


def topic_rows(table: pa.Table, topic: TopicConfig) -> pa.BooleanArray:
    """Which rows of a corpus table (`id`, `text`, `label`) are the topic's, as `topic_sides` cuts them:
    rows with its label, rows its words or pattern match, or the examples of its file (by id or text).

    Raises:
        ConfigError: A bad pattern, or a label topic on a corpus without labels.
        MissingAssetError: The examples file does not exist.
    """
    if topic.kind == "examples_file":
        return _is_example(table, _read_examples(Path(str(topic.examples_file)).expanduser()))
    return _matches(table, topic, topic_pattern(topic) if topic.kind in WORD_TOPIC_KINDS else None)


def _cut(table: pa.Table, topic: TopicConfig, pattern: re.Pattern[str] | None) -> TopicSide:
    mask = _matches(table, topic, pattern)
    return TopicSide(topic=table.filter(mask), other=table.filter(pc.invert(mask)))


def _matches(table: pa.Table, topic: TopicConfig, pattern: re.Pattern[str] | None) -> pa.BooleanArray:
    if pattern is None:
        if table.column("label").null_count == table.num_rows and table.num_rows:
            raise ConfigError(
                f"topic.label={topic.label!r} needs a corpus with labels, but this corpus has none: set "
                "data.label_column to the column that holds topics, or use topic.keywords or topic.regex"
            )
        return pc.fill_null(pc.equal(table.column("label"), str(topic.label)), False)
    texts = table.column("text").to_pylist()
    return pa.array([pattern.search(text) is not None for text in texts], type=pa.bool_())


def _is_example(table: pa.Table, examples: pa.Table) -> pa.BooleanArray:
    """Rows that are one of the examples: the same id or the same text (outer spaces aside)."""
    texts = {text.strip() for text in examples.column("text").to_pylist()}
    ids = set(examples.column("id").to_pylist())
    rows = zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True)
    return pa.array([row_id in ids or text.strip() in texts for row_id, text in rows], type=pa.bool_())


def _example_sides(topic: TopicConfig, train: pa.Table, test: pa.Table) -> tuple[TopicSide, TopicSide]:
    examples = _read_examples(Path(str(topic.examples_file)).expanduser())
    # Hash rank, not hash threshold: order-independent like split_train_test, yet never an empty side.
    ranks = np.argsort([id_fraction(i) for i in examples.column("id").to_pylist()], kind="stable")
    n_test = max(1, round(EXAMPLES_TEST_FRACTION * examples.num_rows)) if examples.num_rows > 1 else 0
    is_test = np.zeros(examples.num_rows, dtype=bool)
    is_test[ranks[:n_test]] = True

    def others(table: pa.Table) -> pa.Table:
        return table.filter(pc.invert(_is_example(table, examples)))

    mask = pa.array(is_test, type=pa.bool_())
    return (
        TopicSide(topic=examples.filter(pc.invert(mask)), other=others(train)),
        TopicSide(topic=examples.filter(mask), other=others(test)),
    )


def _read_examples(path: Path) -> pa.Table:
    if not path.is_file():
        raise MissingAssetError(
            f"topic.examples_file={str(path)!r} does not exist: give a text file with one example per line, "
            "or a .parquet/.jsonl file with a 'text' column"
        )
    if path.suffix.lower() in TABLE_SUFFIXES:
        table = read_table_file(path)
        if "text" not in table.column_names:
            raise ConfigError(
                f"{path} has no column 'text'; its columns are: {', '.join(table.column_names)}. "
                "Rename the column holding the examples to 'text'"
            )
    elif path.suffix.lower() in TEXT_SUFFIXES:
        lines = [line.strip() for line in _read_utf8(path).splitlines()]
        table = pa.table({"text": pa.array([line for line in lines if line], type=pa.string())})
    else:
        raise ConfigError(
            f"topic.examples_file={str(path)!r} has the extension {path.suffix!r}, which is not an examples "
            f"format: give a text file ({', '.join(s for s in TEXT_SUFFIXES if s)}, one example per line) "
            f"or a table ({', '.join(TABLE_SUFFIXES)}) with a 'text' column"
        )
    return _normalise_examples(table, path)


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"topic.examples_file={str(path)!r} is not UTF-8 text (byte {error.object[error.start]:#04x} at "
            f"offset {error.start}): save it as UTF-8, one example per line"
        ) from None


def _normalise_examples(table: pa.Table, path: Path) -> pa.Table:
    texts = [str(t).strip() if t is not None else "" for t in table.column("text").to_pylist()]
    first: dict[str, int] = {}
    for index, text in enumerate(texts):
        if text:
            first.setdefault(text, index)  # repeated examples would weigh double; keep the first
    table = table.take(sorted(first.values()))
    texts = [texts[i] for i in sorted(first.values())]
    if "id" in table.column_names:
        ids = pc.cast(table.column("id"), pa.string())
    else:
        ids = pa.array(["example-" + hashlib.sha1(t.encode("utf-8")).hexdigest()[:16] for t in texts])
    label = table.column("label") if "label" in table.column_names else pa.nulls(table.num_rows, pa.string())
    rest = [name for name in table.column_names if name not in ("id", "text", "label")]
    logger.info("examples file: %d distinct examples", table.num_rows)  # its name may be private too
    return pa.table(
        [
            ids,
            pa.array(texts, type=pa.string()),
            pc.cast(label, pa.string()),
            *(table.column(n) for n in rest),
        ],
        names=["id", "text", "label", *rest],
    )


def _check_matches(topic: TopicConfig, train: TopicSide, test: TopicSide) -> None:
    n_train, n_test = train.topic.num_rows, test.topic.num_rows
    if n_train and n_test:
        return
    kind = topic.kind
    if kind == "examples_file":
        raise CodeunlearnError(
            f"topic examples_file={topic.examples_file!r} holds {n_train + n_test} distinct non-empty "
            "examples; it needs at least 2 (one is held out for evaluation): add examples"
        )
    total = sum(side.topic.num_rows + side.other.num_rows for side in (train, test))
    described = {"label": f"label={topic.label!r}", "keywords": f"keywords={list(topic.keywords)!r}"}
    head = f"topic {described.get(kind, f'regex={topic.regex!r}')}"
    if n_train + n_test == 0:
        head += f" matches no example in the corpus (0 of {total:,} rows)"
    else:
        head += (
            f" matches {n_train + n_test:,} of {total:,} rows, but {n_train} on the train side and {n_test} "
            "on the test side; each side needs at least one"
        )
    raise CodeunlearnError(f"{head}; {_match_hint(topic, train, test)}")


def _match_hint(topic: TopicConfig, train: TopicSide, test: TopicSide) -> str:
    if topic.kind == "keywords":
        tried = ", ".join(repr(k) for k in topic.keywords)
        return f"tried whole-word, case-insensitive: {tried}; choose words that occur in the corpus"
    if topic.kind == "regex":
        return f"tried re.search({topic.regex!r}, text, re.IGNORECASE); loosen the pattern"
    labels = sorted(
        {v for side in (train, test) for t in (side.topic, side.other) for v in t.column("label").to_pylist()}
        - {None}
    )
    shown = ", ".join(labels[:40]) + (f", ... ({len(labels)} in all)" if len(labels) > 40 else "")
    by_lower = {label.lower(): label for label in labels}
    close = difflib.get_close_matches(str(topic.label).lower(), list(by_lower), n=1)
    suggestion = f", did you mean {by_lower[close[0]]}?" if close else "; set topic.label to one of them"
    return f"labels that exist: {shown}{suggestion}"
