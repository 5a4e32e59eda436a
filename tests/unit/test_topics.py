"""Topic splits on a small synthetic corpus: every topic kind, controls, errors, determinism, files."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codeunlearn.core.config import TopicConfig
from codeunlearn.core.errors import CodeunlearnError, ConfigError, MissingAssetError
from codeunlearn.data.controls import NEUTRAL_WORDS
from codeunlearn.data.corpus import content_hash, split_train_test
from codeunlearn.data.topics import (
    SPLIT_NAMES,
    Splits,
    build_splits,
    read_splits,
    write_splits,
)

NOUNS = {
    "food": ["bread", "cheese", "apple", "soup"],
    "animal": ["horse", "otter", "eagle", "whale"],
    "tool": ["hammer", "chisel", "saw", "drill"],
    "place": ["harbour", "valley", "market", "village"],
}
LABELS = sorted(NOUNS)


def _corpus(n: int = 480, labelled: bool = True) -> pa.Table:
    ids, texts, labels = [], [], []
    for i in range(n):
        label = LABELS[i % 4]
        noun = NOUNS[label][(i // 4) % 4]
        texts.append(f"{noun.capitalize()} number {i}: " + "and so on " * (i % 9) + f"about the {noun}.")
        ids.append(f"r{i:04d}")
        labels.append(label)
    texts[1] = "The breadth of the valley, number 1."  # `bread` inside a word is not the keyword
    return pa.table({"id": ids, "text": texts, "label": labels if labelled else [None] * n})


def _topic(**fields: object) -> TopicConfig:
    caps = {"max_forget": 60, "max_control": 50, "max_retain": 80, "max_eval_forget": 20}
    return TopicConfig(**{"label": None, **caps, "max_eval_retain_per_topic": 5, **fields})


@pytest.fixture(scope="module")
def sides() -> tuple[pa.Table, pa.Table]:
    return split_train_test(_corpus(), 0.25)


def _ids(table: pa.Table) -> set[str]:
    return set(table.column("id").to_pylist())


def _assert_shared_invariants(splits: Splits, topic: TopicConfig) -> None:
    tables = splits.tables()
    for name, table in tables.items():
        assert table.column_names[:3] == ["id", "text", "label"], name
        assert table.num_rows > 0, name
        assert splits.manifest["splits"][name]["count"] == table.num_rows
        assert splits.manifest["splits"][name]["content_hash"] == content_hash(
            table.column("text").to_pylist()
        )
    forget = _ids(splits.forget_train) | _ids(splits.forget_test)
    assert not forget & (_ids(splits.retain_train) | _ids(splits.retain_test))
    assert not forget & (_ids(splits.control_train) | _ids(splits.control_test))
    assert not _ids(splits.forget_train) & _ids(splits.forget_test)
    assert splits.forget_train.num_rows <= topic.max_forget
    assert splits.control_train.num_rows <= topic.max_control
    assert splits.retain_train.num_rows <= topic.max_retain
    assert splits.forget_test.num_rows <= topic.max_eval_forget
    for retain in (splits.retain_train, splits.retain_test, splits.retain_val):
        assert retain.column("topic").to_pylist() == retain.column("label").to_pylist()
    _assert_val_apart(splits)


def _assert_val_apart(splits: Splits) -> None:
    """The validation splits share no row with any other split, nor with the control's sources."""
    forget_val, retain_val = _ids(splits.forget_val), _ids(splits.retain_val)
    sources = {
        source
        for table in (splits.control_train, splits.control_test)
        for source in table.column("source_id").to_pylist()
    }
    others = {
        name: _ids(table)
        for name, table in splits.tables().items()
        if name not in ("forget_val", "retain_val")
    }
    assert not forget_val & retain_val
    assert not forget_val & sources
    for name, ids in others.items():
        assert not forget_val & ids, name
        assert not retain_val & ids, name
    assert splits.forget_val.column_names == splits.forget_train.column_names
    assert splits.retain_val.column_names == splits.retain_train.column_names


def test_label_topic_with_length_matched_control(sides: tuple[pa.Table, pa.Table]) -> None:
    topic = _topic(label="food")
    splits = build_splits(*sides, topic, seed=0)
    _assert_shared_invariants(splits, topic)
    assert set(splits.forget_train.column("label").to_pylist()) == {"food"}
    assert set(splits.forget_test.column("label").to_pylist()) == {"food"}
    assert "food" not in set(splits.retain_train.column("label").to_pylist())
    assert "food" not in set(splits.control_train.column("label").to_pylist())
    manifest = splits.manifest
    assert (manifest["topic"], manifest["kind"], manifest["seed"]) == ("food", "label", 0)
    assert manifest["control_method"] == "length_matched_sample"
    assert manifest["splits"]["control_train"]["control_method"] == "length_matched_sample"
    # Control rows are real corpus rows, paired with forget rows of nearly the same length.
    forget_length = dict(
        zip(*(splits.forget_train.column(c).to_pylist() for c in ("id", "text")), strict=True)
    )
    pairs = zip(*(splits.control_train.column(c).to_pylist() for c in ("source_id", "text")), strict=True)
    gaps = [abs(len(forget_length[source]) - len(text)) for source, text in pairs]
    assert splits.control_train.num_rows == topic.max_control
    assert max(gaps) <= 3
    assert not _ids(splits.control_train) & _ids(splits.retain_train)
    assert not _ids(splits.control_test) & _ids(splits.retain_test)


def test_retain_test_is_stratified_by_label(sides: tuple[pa.Table, pa.Table]) -> None:
    splits = build_splits(*sides, _topic(label="food"), seed=0)
    per_topic = Counter(splits.retain_test.column("topic").to_pylist())
    assert per_topic == {"animal": 5, "place": 5, "tool": 5}


def test_keyword_topic_with_word_swap_control(sides: tuple[pa.Table, pa.Table]) -> None:
    topic = _topic(keywords=("bread", "Cheese"))
    splits = build_splits(*sides, topic, seed=3)
    _assert_shared_invariants(splits, topic)
    topic_word = re.compile(r"\b(bread|cheese)\b", re.IGNORECASE)
    for table in (splits.forget_train, splits.forget_test):
        assert all(topic_word.search(text) for text in table.column("text").to_pylist())
    retain_texts = (
        splits.retain_train.column("text").to_pylist() + splits.retain_test.column("text").to_pylist()
    )
    assert not any(topic_word.search(text) for text in retain_texts)
    assert "r0001" not in _ids(splits.forget_train) | _ids(splits.forget_test)  # "breadth"
    control, forget = splits.control_train, splits.forget_train
    assert control.num_rows == forget.num_rows  # 20 topic rows on the train side, under the cap
    assert control.column("source_id").to_pylist() == forget.column("id").to_pylist()
    assert not any(topic_word.search(text) for text in control.column("text").to_pylist())
    assert splits.control_test.num_rows == splits.forget_test.num_rows
    for before, after in zip(
        forget.column("text").to_pylist(), control.column("text").to_pylist(), strict=True
    ):
        first = after.split(" ")[0]
        assert first[0].isupper() and first.lower() in NEUTRAL_WORDS  # the capital is kept
        assert after.split(" ")[1:-1] == before.split(" ")[1:-1]  # only the topic words change
    words = splits.manifest["splits"]["control_train"]["replacement_words"]
    assert splits.manifest["control_method"] == "word_swap"
    assert words and set(words) <= set(NEUTRAL_WORDS)


def test_regex_topic(sides: tuple[pa.Table, pa.Table]) -> None:
    splits = build_splits(*sides, _topic(regex=r"\b(?:otters?|eagles?)\b"), seed=0)
    texts = splits.forget_train.column("text").to_pylist()
    assert texts and all(("otter" in t.lower()) or ("eagle" in t.lower()) for t in texts)
    assert splits.manifest["kind"] == "regex"
    assert not any(re.search("otter|eagle", t, re.I) for t in splits.control_train.column("text").to_pylist())


@pytest.mark.parametrize("regex", ["(unclosed", "[a-"])
def test_invalid_regex_is_a_config_error(sides: tuple[pa.Table, pa.Table], regex: str) -> None:
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        build_splits(*sides, _topic(regex=regex), seed=0)


def test_regex_matching_everything_is_refused(sides: tuple[pa.Table, pa.Table]) -> None:
    with pytest.raises(ConfigError, match="matches the empty string"):
        build_splits(*sides, _topic(regex="x*"), seed=0)


def test_examples_file_topic(tmp_path: Path, sides: tuple[pa.Table, pa.Table]) -> None:
    train, test = sides
    corpus_texts = train.column("text").to_pylist()[:3] + test.column("text").to_pylist()[:2]
    own = [f"My own sentence about gardening, number {i}." for i in range(10)]
    path = tmp_path / "forget.txt"
    path.write_text("\n".join(own + corpus_texts + ["", own[0]]) + "\n")  # a blank and a repeat
    splits = build_splits(train, test, _topic(examples_file=str(path)), seed=0)
    forget_texts = (
        splits.forget_train.column("text").to_pylist()
        + splits.forget_val.column("text").to_pylist()
        + splits.forget_test.column("text").to_pylist()
    )
    assert sorted(forget_texts) == sorted(own + corpus_texts)
    assert splits.forget_val.num_rows == splits.manifest["topic_rows"]["train"] // 5
    assert splits.forget_test.num_rows == 3  # 20% of 15, never zero
    others = [splits.retain_train, splits.retain_test, splits.retain_val, splits.control_train]
    others.append(splits.control_test)
    assert not set(corpus_texts) & {t for table in others for t in table.column("text").to_pylist()}
    assert splits.manifest["control_method"] == "length_matched_sample"
    assert splits.manifest["topic"] == "examples:forget.txt"


def test_examples_parquet_needs_a_text_column(tmp_path: Path, sides: tuple[pa.Table, pa.Table]) -> None:
    path = tmp_path / "forget.parquet"
    pq.write_table(pa.table({"sentence": ["a b", "c d"]}), path)
    with pytest.raises(ConfigError, match="no column 'text'; its columns are: sentence"):
        build_splits(*sides, _topic(examples_file=str(path)), seed=0)
    pq.write_table(pa.table({"text": ["first example here", "second one", "third"]}), path)
    splits = build_splits(*sides, _topic(examples_file=str(path)), seed=0)
    assert splits.forget_train.num_rows + splits.forget_test.num_rows == 3


def test_examples_file_errors(tmp_path: Path, sides: tuple[pa.Table, pa.Table]) -> None:
    with pytest.raises(MissingAssetError, match="does not exist"):
        build_splits(*sides, _topic(examples_file=str(tmp_path / "absent.txt")), seed=0)
    single = tmp_path / "one.txt"
    single.write_text("only one example\n")
    with pytest.raises(CodeunlearnError, match="at least 2"):
        build_splits(*sides, _topic(examples_file=str(single)), seed=0)


def test_unmatched_label_suggests_the_closest(sides: tuple[pa.Table, pa.Table]) -> None:
    with pytest.raises(CodeunlearnError) as error:
        build_splits(*sides, _topic(label="fod"), seed=0)
    message = str(error.value)
    assert "topic label='fod' matches no example in the corpus (0 of 480 rows)" in message
    assert "labels that exist: animal, food, place, tool" in message
    assert "did you mean food?" in message


def test_unmatched_keywords_say_what_was_tried(sides: tuple[pa.Table, pa.Table]) -> None:
    with pytest.raises(
        CodeunlearnError, match="matches no example.*tried whole-word, case-insensitive: 'pasta'"
    ):
        build_splits(*sides, _topic(keywords=("pasta",)), seed=0)


def test_label_topic_needs_labels() -> None:
    train, test = split_train_test(_corpus(labelled=False), 0.25)
    with pytest.raises(ConfigError, match="needs a corpus with labels"):
        build_splits(train, test, _topic(label="food"), seed=0)
    splits = build_splits(train, test, _topic(keywords=("horse",)), seed=0)  # keywords need none
    assert splits.retain_test.num_rows == 20  # no labels to stratify by: max_eval_forget rows


def test_bad_sizes_and_two_kinds_are_config_errors(sides: tuple[pa.Table, pa.Table]) -> None:
    with pytest.raises(ConfigError, match="topic.max_forget=0"):
        build_splits(*sides, _topic(label="food", max_forget=0), seed=0)
    with pytest.raises(ConfigError, match="seed=-1"):
        build_splits(*sides, _topic(label="food"), seed=-1)
    with pytest.raises(ConfigError, match="exactly one of"):
        build_splits(*sides, _topic(label="food", keywords=("bread",)), seed=0)


def test_same_seed_same_splits_other_seed_other_samples(sides: tuple[pa.Table, pa.Table]) -> None:
    topic = _topic(label="food", max_forget=30, max_retain=40)
    first, again = build_splits(*sides, topic, seed=7), build_splits(*sides, topic, seed=7)
    for name in SPLIT_NAMES:
        assert getattr(first, name).equals(getattr(again, name)), name
    assert first.manifest == again.manifest
    other = build_splits(*sides, topic, seed=8)
    for name in ("forget_train", "retain_train", "forget_val", "retain_val"):
        assert (
            other.manifest["splits"][name]["content_hash"] != first.manifest["splits"][name]["content_hash"]
        )


def test_write_read_round_trip_without_raw_text(tmp_path: Path, sides: tuple[pa.Table, pa.Table]) -> None:
    splits = build_splits(*sides, _topic(keywords=("bread",)), seed=0)
    target = tmp_path / "splits"
    write_splits(splits, target)
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [f"{n}.parquet" for n in SPLIT_NAMES] + ["manifest.json"]
    )
    assert min(splits.forget_val.num_rows, splits.retain_val.num_rows) > 0
    loaded = read_splits(target)
    for name in SPLIT_NAMES:
        assert getattr(loaded, name).equals(getattr(splits, name)), name
    assert loaded.manifest == splits.manifest
    manifest_text = (target / "manifest.json").read_text()
    assert not any(text in manifest_text for text in splits.forget_train.column("text").to_pylist())


def test_failed_write_leaves_the_old_splits(tmp_path: Path, sides: tuple[pa.Table, pa.Table]) -> None:
    old = build_splits(*sides, _topic(label="food"), seed=0)
    target = tmp_path / "splits"
    write_splits(old, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    new = build_splits(*sides, _topic(label="tool"), seed=1)
    broken = dataclasses.replace(new, manifest={**new.manifest, "bad": object()})  # fails after the parquet
    with pytest.raises(TypeError):
        write_splits(broken, target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["splits"]  # no staging or backup directory left
    write_splits(new, target)  # a good write replaces the old one whole
    assert read_splits(target).manifest["topic"] == "tool"
    assert [p.name for p in tmp_path.iterdir()] == ["splits"]


def test_read_splits_tells_to_run_prepare(tmp_path: Path, sides: tuple[pa.Table, pa.Table]) -> None:
    with pytest.raises(CodeunlearnError, match="does not exist.*run `codeunlearn prepare` first"):
        read_splits(tmp_path / "nowhere")
    write_splits(build_splits(*sides, _topic(label="food"), seed=0), tmp_path / "splits")
    (tmp_path / "splits" / "retain_test.parquet").unlink()
    with pytest.raises(CodeunlearnError, match="missing retain_test.parquet.*codeunlearn prepare"):
        read_splits(tmp_path / "splits")


def test_manifest_is_plain_json(sides: tuple[pa.Table, pa.Table]) -> None:
    splits = build_splits(*sides, _topic(regex="horse"), seed=0)
    assert json.loads(json.dumps(splits.manifest)) == splits.manifest
    assert splits.manifest["topic_rows"]["train"] == sum(
        "horse" in t.lower() for t in sides[0].column("text").to_pylist()
    )


def test_val_splits_come_from_the_train_side_apart_from_mining(sides: tuple[pa.Table, pa.Table]) -> None:
    train, test = sides
    topic = _topic(label="food", max_val_forget=10, max_val_retain=30)
    splits = build_splits(train, test, topic, seed=0)
    _assert_val_apart(splits)
    test_ids = _ids(test)
    assert _ids(splits.forget_val) <= _ids(train) and _ids(splits.retain_val) <= _ids(train)
    assert not (_ids(splits.forget_val) | _ids(splits.retain_val)) & test_ids
    assert set(splits.forget_val.column("label").to_pylist()) == {"food"}
    assert "food" not in set(splits.retain_val.column("label").to_pylist())
    assert (splits.forget_val.num_rows, splits.retain_val.num_rows) == (10, 30)
    # Carved before mining's sample: a topic big enough for both keeps max_forget rows for mining.
    assert splits.manifest["topic_rows"]["train"] - 10 > topic.max_forget
    assert splits.forget_train.num_rows == topic.max_forget
    for name in ("forget_val", "retain_val"):
        assert splits.manifest["splits"][name]["count"] == getattr(splits, name).num_rows


def test_val_sizes_follow_the_caps_and_a_fifth_of_a_small_topic(sides: tuple[pa.Table, pa.Table]) -> None:
    small = build_splits(
        *sides, _topic(keywords=("bread",), max_val_forget=100, max_val_retain=10**6), seed=0
    )
    topic_rows = small.manifest["topic_rows"]["train"]
    assert topic_rows < 100  # so the fifth, not the cap, limits forget_val
    assert small.forget_val.num_rows == topic_rows // 5 > 0
    assert small.forget_train.num_rows == topic_rows - topic_rows // 5  # the rest all go to mining
    # An unreachable retain cap takes every train-side row that no other split holds.
    other_rows = sides[0].num_rows - topic_rows
    # (a swap control's rows are rewritten copies, not corpus rows)
    mining = _ids(small.retain_train) | (_ids(small.control_train) & _ids(sides[0]))
    assert small.retain_val.num_rows == other_rows - len(mining) > 0
    capped = build_splits(*sides, _topic(keywords=("bread",), max_val_forget=2, max_val_retain=7), seed=0)
    assert (capped.forget_val.num_rows, capped.retain_val.num_rows) == (2, 7)


def test_val_caps_of_zero_give_empty_val_tables(sides: tuple[pa.Table, pa.Table]) -> None:
    topic = _topic(label="food", max_val_forget=0, max_val_retain=0)
    splits = build_splits(*sides, topic, seed=0)
    assert splits.forget_val.num_rows == splits.retain_val.num_rows == 0
    assert splits.forget_val.schema == splits.forget_train.schema
    assert splits.retain_val.schema == splits.retain_train.schema
    assert splits.forget_train.num_rows == topic.max_forget < splits.manifest["topic_rows"]["train"]
    assert splits.manifest["splits"]["forget_val"]["count"] == 0
    # With no validation rows, mining's sets are the ones drawn before validation splits existed.
    with_val = build_splits(*sides, _topic(label="food", max_val_forget=0), seed=0)
    assert with_val.forget_train.equals(splits.forget_train)
    assert with_val.retain_val.num_rows > 0
    assert with_val.retain_train.equals(splits.retain_train)  # retain_val is drawn after retain_train


def test_same_seed_same_val_ids(sides: tuple[pa.Table, pa.Table]) -> None:
    topic = _topic(keywords=("horse", "otter"), max_val_forget=8, max_val_retain=25)
    first, again = build_splits(*sides, topic, seed=5), build_splits(*sides, topic, seed=5)
    for name in ("forget_val", "retain_val"):
        assert getattr(first, name).column("id").to_pylist() == getattr(again, name).column("id").to_pylist()
    other = build_splits(*sides, topic, seed=6)
    assert _ids(other.forget_val) != _ids(first.forget_val)
    assert _ids(other.retain_val) != _ids(first.retain_val)


def test_negative_val_caps_are_config_errors(sides: tuple[pa.Table, pa.Table]) -> None:
    for name in ("max_val_forget", "max_val_retain"):
        topic = _topic(label="food", **{name: -1})
        with pytest.raises(ConfigError, match=f"topic.{name}=-1: set it to a whole number of 0 or more"):
            topic.validate()
        with pytest.raises(ConfigError, match=f"topic.{name}=-1"):
            build_splits(*sides, topic, seed=0)


def test_splits_prepared_before_val_splits_still_read(
    tmp_path: Path, sides: tuple[pa.Table, pa.Table]
) -> None:
    splits = build_splits(*sides, _topic(label="food"), seed=0)
    target = tmp_path / "splits"
    write_splits(splits, target)
    # What `write_splits` wrote before validation splits existed: no val files, no manifest entries.
    manifest = json.loads((target / "manifest.json").read_text())
    for name in ("forget_val", "retain_val"):
        (target / f"{name}.parquet").unlink()
        del manifest["splits"][name]
    (target / "manifest.json").write_text(json.dumps(manifest))
    old = read_splits(target)
    assert old.forget_val.num_rows == old.retain_val.num_rows == 0
    assert old.forget_val.schema == splits.forget_train.schema
    assert old.retain_val.schema == splits.retain_train.schema
    assert old.forget_train.equals(splits.forget_train) and old.manifest == manifest
    # A directory whose manifest lists a val split but lacks its file is broken, not old.
    write_splits(splits, target)
    (target / "retain_val.parquet").unlink()
    with pytest.raises(CodeunlearnError, match="missing retain_val.parquet.*codeunlearn prepare"):
        read_splits(target)


# Six labels with the same lengths on each side: a topic's controls could match any other topic's rows.
EVEN_LABELS = ("alpha", "bravo", "delta", "gamma", "kappa", "sigma")


def _even_side(prefix: str, per_length: int) -> pa.Table:
    rows = []
    for label in EVEN_LABELS:
        for words in range(12):
            for _ in range(per_length):
                row_id = f"{prefix}{len(rows):04d}"
                text = f"{label.capitalize()} {row_id}" + " word" * words + "."
                rows.append({"id": row_id, "text": text, "label": label})
    # Shuffled, so that no two topics' non-topic rows sit at the same places in their tables.
    order = np.random.default_rng(len(rows)).permutation(len(rows))
    return pa.Table.from_pylist(rows).take(order)


def _even_topic(label: str) -> TopicConfig:
    # Every train row of the topic goes to mining (no forget_val, caps above its 60 rows), so two topics'
    # forget sets have the same lengths.
    caps = {"max_forget": 100, "max_control": 100, "max_retain": 80, "max_eval_forget": 12}
    return TopicConfig(label=label, **caps, max_eval_retain_per_topic=5, max_val_forget=0, max_val_retain=60)


@pytest.fixture(scope="module")
def even_splits() -> dict[str, Splits]:
    train, test = _even_side("a", 5), _even_side("e", 2)
    return {label: build_splits(train, test, _even_topic(label), seed=0) for label in EVEN_LABELS}


def _ids_outside(table: pa.Table, labels: tuple[str, ...]) -> set[str]:
    """The ids of the rows whose label is none of `labels`."""
    rows = zip(*(table.column(c).to_pylist() for c in ("id", "label")), strict=True)
    return {row_id for row_id, label in rows if label not in labels}


def _nested(first: set[str], second: set[str]) -> bool:
    return first <= second or second <= first


PAIRS = [("alpha", "bravo"), ("alpha", "sigma"), ("delta", "kappa"), ("gamma", "bravo")]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_retain_test_of_the_other_labels_is_the_same_for_two_topics(
    even_splits: dict[str, Splits], a: str, b: str
) -> None:
    first, second = even_splits[a].retain_test, even_splits[b].retain_test
    assert _ids_outside(first, (a, b)) == _ids_outside(second, (a, b))
    assert Counter(first.column("label").to_pylist()) == {label: 5 for label in EVEN_LABELS if label != a}


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_retain_rows_free_for_two_topics_are_taken_by_both(
    even_splits: dict[str, Splits], a: str, b: str
) -> None:
    first, second = even_splits[a], even_splits[b]
    controls = set().union(*(_ids(s.control_train) | _ids(s.control_test) for s in (first, second)))
    # Rows of neither topic nor either control: both topics go down one key order and only their caps end
    # at different places (each also takes rows of the other topic), so one set holds the other.
    train = [_ids_outside(s.retain_train, (a, b)) - controls for s in (first, second)]
    assert _nested(*train) and len(train[0] & train[1]) > 0.8 * len(train[0] | train[1])
    taken = _ids(first.retain_train) | _ids(second.retain_train)
    val = [_ids_outside(s.retain_val, (a, b)) - controls - taken for s in (first, second)]
    assert _nested(*val) and len(val[0] & val[1]) > 0.8 * len(val[0] | val[1])


def _controls_by_length(splits: Splits, topics: tuple[str, ...]) -> dict[int, set[str]]:
    """control_train's ids of rows outside `topics`, by text length."""
    groups: dict[int, set[str]] = {}
    rows = zip(*(splits.control_train.column(c).to_pylist() for c in ("id", "text", "label")), strict=True)
    for row_id, text, label in rows:
        if label not in topics:
            groups.setdefault(len(text), set()).add(row_id)
    return groups


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_topics_of_equal_lengths_take_mostly_the_same_controls(
    even_splits: dict[str, Splits], a: str, b: str
) -> None:
    first, second = even_splits[a], even_splits[b]
    for splits in (first, second):  # lengths matched exactly: the pool has rows of every length to spare
        forget = dict(zip(*(splits.forget_train.column(c).to_pylist() for c in ("id", "text")), strict=True))
        pairs = zip(*(splits.control_train.column(c).to_pylist() for c in ("source_id", "text")), strict=True)
        assert all(len(forget[source]) == len(text) for source, text in pairs)
    by_length = [_controls_by_length(splits, (a, b)) for splits in (first, second)]
    assert by_length[0].keys() == by_length[1].keys()
    # Per length, both go down one key order of the rows of neither topic: one set holds the other.
    assert all(_nested(by_length[0][n], by_length[1][n]) for n in by_length[0])
    shared = _ids(first.control_train) & _ids(second.control_train)
    assert len(shared) >= 0.6 * first.control_train.num_rows  # a random choice shares about a tenth
