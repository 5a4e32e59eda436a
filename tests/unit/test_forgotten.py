"""Topics already forgotten leave the validation and test retain sets of a new topic (small real tables)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from codeunlearn.core.config import TopicConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.data.corpus import split_train_test
from codeunlearn.data.forgotten import source_topics
from codeunlearn.data.topics import build_splits
from codeunlearn.requests.forgotten import forgotten_topics
from codeunlearn.requests.queue import RequestStore

NOUNS = {
    "food": ["bread", "cheese", "apple", "soup"],
    "animal": ["horse", "otter", "eagle", "whale"],
    "tool": ["hammer", "chisel", "saw", "drill"],
    "place": ["harbour", "valley", "market", "village"],
}
LABELS = sorted(NOUNS)


def _corpus(n: int = 480) -> pa.Table:
    ids, texts, labels = [], [], []
    for i in range(n):
        label = LABELS[i % 4]
        noun = NOUNS[label][(i // 4) % 4]
        texts.append(f"{noun.capitalize()} number {i}: " + "and so on " * (i % 9) + f"about the {noun}.")
        ids.append(f"r{i:04d}")
        labels.append(label)
    return pa.table({"id": ids, "text": texts, "label": labels})


def _topic(**fields: object) -> TopicConfig:
    caps = {"max_forget": 60, "max_control": 50, "max_retain": 80, "max_eval_forget": 20}
    return TopicConfig(
        **{"label": None, **caps, "max_eval_retain_per_topic": 5, "max_val_retain": 40, **fields}
    )


@pytest.fixture(scope="module")
def sides() -> tuple[pa.Table, pa.Table]:
    return split_train_test(_corpus(), 0.25)


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist()


def _of_label(table: pa.Table, label: str, column: str = "id") -> list:
    """The `column` values of the table's rows with `label`, in order."""
    return [
        value
        for value, row in zip(_column(table, column), _column(table, "label"), strict=True)
        if row == label
    ]


def test_retain_sets_hold_no_row_of_a_forgotten_label_or_keyword_topic(
    sides: tuple[pa.Table, pa.Table],
) -> None:
    topic = _topic(label="animal")
    food, harbour = _topic(label="food"), _topic(keywords=("harbour",))
    plain = build_splits(*sides, topic, seed=0)
    splits = build_splits(*sides, topic, seed=0, forgotten=(food, harbour))
    for name in ("retain_val", "retain_test"):
        table = getattr(splits, name)
        assert "food" not in _column(table, "label"), name
        assert not any("harbour" in text.lower() for text in _column(table, "text")), name
        # the draw had those rows to take: without the exclusion it takes some
        assert "food" in _column(getattr(plain, name), "label"), name
        assert any("harbour" in text.lower() for text in _column(getattr(plain, name), "text")), name
    # the request's own sets, and mining's, are as they were
    for name in (
        "forget_train",
        "forget_test",
        "forget_val",
        "control_train",
        "control_test",
        "retain_train",
    ):
        assert getattr(splits, name).equals(getattr(plain, name)), name
    # a label no forgotten topic touches keeps the test rows it had (draws are by row id)
    assert _of_label(splits.retain_test, "tool") == _of_label(plain.retain_test, "tool")
    # the freed places go to the other labels, still balanced
    assert Counter(_column(splits.retain_test, "label")) == {"place": 5, "tool": 5}
    assert splits.retain_val.num_rows == 40


def test_manifest_records_the_exclusion_without_words(sides: tuple[pa.Table, pa.Table]) -> None:
    topic = _topic(label="animal")
    food, harbour = _topic(label="food"), _topic(keywords=("harbour",))
    splits = build_splits(*sides, topic, seed=0, forgotten=(food, harbour))
    excluded = splits.manifest["excluded_topics"]
    assert [(e["kind"], e["key"]) for e in excluded] == [("label", "food"), ("keywords", harbour.key)]
    assert harbour.key.startswith("keywords-")
    for entry in excluded:
        assert set(entry["removed"]) == {"retain_val", "retain_test"}
        assert all(n > 0 for n in entry["removed"].values())
    # every food row of the test side outside the topic's and the control's rows was removed
    test = sides[1]
    food_test = set(_of_label(test, "food"))
    assert excluded[0]["removed"]["retain_test"] == len(food_test - set(_column(splits.control_test, "id")))
    text = json.dumps(splits.manifest)
    assert "harbour" not in text.lower()
    assert "excluded_topics" not in build_splits(*sides, topic, seed=0).manifest


def test_examples_file_topic_is_matched_like_a_forget_set(
    tmp_path: Path, sides: tuple[pa.Table, pa.Table]
) -> None:
    train, test = sides
    tool_rows = _of_label(train, "tool", "text") + _of_label(test, "tool", "text")
    path = tmp_path / "tools.txt"
    path.write_text("\n".join(tool_rows) + "\n")
    splits = build_splits(
        train, test, _topic(label="animal"), seed=0, forgotten=(_topic(examples_file=str(path)),)
    )
    for name in ("retain_val", "retain_test"):
        assert "tool" not in _column(getattr(splits, name), "label"), name
    assert "tools.txt" not in json.dumps(splits.manifest)


def test_source_names_give_topics(caplog: pytest.LogCaptureFixture) -> None:
    caps = _topic(keywords=("harbour",), max_forget=7)
    other_keywords = _topic(keywords=("saw",)).key
    with caplog.at_level(logging.WARNING, logger="codeunlearn.data.forgotten"):
        topics = source_topics(["food", caps.key, other_keywords, "req-abc", "animal"], caps, own="animal")
    assert [(t.kind, t.key) for t in topics] == [("label", "food"), ("keywords", caps.key)]
    assert all(t.max_forget == 7 for t in topics)  # the caps of the config
    skipped = " ".join(r.getMessage() for r in caplog.records)
    assert other_keywords in skipped and "req-abc" in skipped and "stay in the retain sets" in skipped
    resolved = source_topics(["req-abc"], caps, own="x", request_topic=lambda name: _topic(label="tool"))
    assert [t.key for t in resolved] == ["tool"]


def test_requests_resolve_to_their_topics_unless_their_file_is_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RequestStore(tmp_path / "store")
    examples = tmp_path / "private.txt"
    examples.write_text("one example\nanother example\n")
    label = store.add(_topic(label="food"), "m", "1")
    keywords = store.add(_topic(keywords=("harbour",)), "m", "1")
    gone = store.add(_topic(examples_file=str(examples)), "m", "1")
    examples.unlink()
    own = store.add(_topic(label="animal"), "m", "1")
    names = [label.request_id, keywords.request_id, gone.request_id, own.request_id, "req-unknown", "place"]
    caps = _topic(label="noun.x", max_retain=3)
    with caplog.at_level(logging.WARNING):
        topics = forgotten_topics(store, names, caps, own.request_id)
    assert [t.name for t in topics] == ["food", "keywords:harbour", "place"]
    assert all(t.max_retain == 3 for t in topics)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert gone.request_id in logged and "req-unknown" in logged and "gone" in logged


def test_a_topic_with_every_other_topic_forgotten_is_refused_with_the_reason(sides):
    others = tuple(_topic(label=label) for label in LABELS if label != "food")

    with pytest.raises(
        CodeunlearnError, match="no retain rows are left for food once the rows of the 3 topic"
    ):
        build_splits(*sides, _topic(label="food"), 0, others)
    assert build_splits(*sides, _topic(label="food"), 0, others[:2]).retain_test.num_rows > 0
