"""A topic's indicative words against hand-computed log-odds, and the keyword-free filter and split."""

from __future__ import annotations

import json
import logging
import math

import pyarrow as pa
import pytest

from codeunlearn.core.config import TopicConfig
from codeunlearn.data.corpus import split_train_test
from codeunlearn.data.topic_words import (
    KEYWORD_FREE_COLUMN,
    indicative_words,
    keyword_free_flags,
    keyword_free_rows,
    keyword_pattern,
    number_forms,
    rank_words,
    text_words,
)
from codeunlearn.data.topics import build_splits

TOPIC_TEXTS = ["apple pie and bread", "apple tart with bread", "bread and butter", "apple juice"]
OTHER_TEXTS = ["a hammer and a saw", "bread knife and saw", "the saw", "and so on"]


def test_text_words_are_distinct_lowercase_runs_of_letters() -> None:
    assert text_words("Apple-pie, 2 apples & a B2B x APPLE") == {"apple", "pie", "apples"}


def test_rank_words_hand_values() -> None:
    # p = (texts with the word + 1) / (texts + 2); score = logit(p_topic) - logit(p_other).
    # apple: 3 of 4 topic texts, 0 of 4 others: logit(4/6) - logit(1/6) = log 2 - log(1/5) = log 10.
    # bread: 3 of 4, 1 of 4: log 2 - logit(2/6) = log 2 - log(1/2) = log 4.
    # and: 2 of 4, 3 of 4: logit(3/6) - logit(4/6) = -log 2, below the floor (log 2): left out.
    ranked = rank_words(TOPIC_TEXTS, OTHER_TEXTS, min_count=2)
    assert [(s.word, s.topic_count, s.other_count) for s in ranked] == [("apple", 3, 0), ("bread", 3, 1)]
    assert ranked[0].log_odds == pytest.approx(math.log(10))
    assert ranked[1].log_odds == pytest.approx(math.log(4))


def test_min_count_admits_rarer_words_ranked_with_ties_alphabetical() -> None:
    # A word in 1 of 4 topic texts and no other: logit(2/6) - logit(1/6) = log(1/2) - log(1/5) = log 2.5.
    ranked = rank_words(TOPIC_TEXTS, OTHER_TEXTS, min_count=1)
    assert [s.word for s in ranked] == ["apple", "bread", "butter", "juice", "pie", "tart", "with"]
    assert ranked[2].log_odds == pytest.approx(math.log(2.5))
    assert indicative_words(TOPIC_TEXTS, OTHER_TEXTS, n_words=3, min_count=1) == ["apple", "bread", "butter"]
    # Deterministic: the order of the texts does not matter.
    assert indicative_words(TOPIC_TEXTS[::-1], OTHER_TEXTS[::-1], 3, 1) == ["apple", "bread", "butter"]


def test_a_word_counts_once_per_text() -> None:
    # "apple apple apple" is one text containing apple, not three.
    once = rank_words(["apple apple apple", "pear"], ["stone"], min_count=1)
    assert [(s.word, s.topic_count) for s in once] == [("apple", 1), ("pear", 1)]


def test_number_forms_add_plurals_and_singulars() -> None:
    forms = number_forms(["onions", "egg", "dishes", "grass"])
    assert {"onions", "onion", "egg", "eggs", "dishes", "dish", "grass", "grasses"} <= set(forms)
    assert "gras" not in forms  # a double s is no plural ending


def test_keyword_free_flags_match_whole_words_in_any_case() -> None:
    pattern = keyword_pattern(number_forms(["apple", "bread", "onions"]))
    texts = ["Apple crumble", "a slice of BREAD", "breadth of it", "pineapple", "an onion", "Breads", "soup"]
    assert keyword_free_flags(texts, pattern).tolist() == [False, False, True, True, False, False, True]


def _corpus() -> pa.Table:
    nouns = {"food": ["bread", "cheese", "apple", "soup"], "tool": ["hammer", "chisel", "saw", "drill"]}
    rows = []
    for i in range(320):
        label = ("food", "tool")[i % 2]
        noun = nouns[label][(i // 2) % 4]
        rows.append({"id": f"r{i:04d}", "text": f"The {noun}, number {i}, and so on.", "label": label})
    return pa.Table.from_pylist(rows)


def _topic(**fields: object) -> TopicConfig:
    caps = {"max_forget": 100, "max_control": 50, "max_retain": 100, "max_eval_forget": 30}
    return TopicConfig(**{"label": None, **caps, "max_eval_retain_per_topic": 5, **fields})


def test_label_topic_split_avoids_its_words_and_the_manifest_lists_them() -> None:
    splits = build_splits(*split_train_test(_corpus(), 0.25), _topic(label="food", keyword_free_words=2), 0)
    entry = splits.manifest["keyword_free"]
    # The four food nouns are the indicative words; "number", "and", "so", "on" are in every text.
    assert entry["n_words"] == 2 and set(entry["words"]) < {"bread", "cheese", "apple", "soup"}
    flags = splits.forget_test.column(KEYWORD_FREE_COLUMN).to_pylist()
    texts = splits.forget_test.column("text").to_pylist()
    assert entry["count"] == sum(flags) > 0 and entry["of"] == len(texts)
    pattern = keyword_pattern(entry["words"])
    assert all((pattern.search(text) is None) == flag for text, flag in zip(texts, flags, strict=True))
    assert keyword_free_rows(splits.forget_test).tolist() == [i for i, flag in enumerate(flags) if flag]
    assert (entry["words_from"], entry["max_words"], entry["min_count"]) == (
        "log_odds_forget_train_vs_retain_train",
        2,
        5,
    )
    assert "skipped" not in entry and json.loads(json.dumps(entry)) == entry


def test_all_words_leaves_no_keyword_free_example_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="codeunlearn.data.topic_words"):
        splits = build_splits(*split_train_test(_corpus(), 0.25), _topic(label="food"), 0)
    entry = splits.manifest["keyword_free"]
    assert entry["count"] == 0 and "lower topic.keyword_free_words" in entry["skipped"]
    assert "keyword-free split of food is empty" in caplog.text


def test_keyword_topic_has_an_empty_split_and_no_words_in_the_manifest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="codeunlearn.data.topic_words"):
        splits = build_splits(*split_train_test(_corpus(), 0.25), _topic(keywords=("bread", "soup")), 0)
    entry = splits.manifest["keyword_free"]
    assert entry["count"] == 0 and entry["of"] == splits.forget_test.num_rows > 0
    assert not any(splits.forget_test.column(KEYWORD_FREE_COLUMN).to_pylist())
    assert "by construction" in entry["skipped"] and "by construction" in caplog.text
    assert entry["words_from"] == "topic_pattern"
    assert "bread" not in json.dumps(entry) and "bread" not in caplog.text  # the words may be private


def test_examples_topic_records_only_a_hash_of_its_words(tmp_path) -> None:
    path = tmp_path / "forget.txt"
    path.write_text("".join(f"Zorblat the {noun} keeper, item {i}.\n" for i in range(20) for noun in ["owl"]))
    splits = build_splits(*split_train_test(_corpus(), 0.25), _topic(examples_file=str(path)), 0)
    entry = splits.manifest["keyword_free"]
    assert entry["n_words"] > 0 and len(entry["words_hash"]) == 64
    assert "words" not in entry and "zorblat" not in json.dumps(splits.manifest).lower()


def test_splits_from_before_the_column_have_no_keyword_free_rows() -> None:
    assert keyword_free_rows(pa.table({"id": ["a"], "text": ["x"]})).tolist() == []
