"""topic.val_rows: validation rows drawn first from the texts the codebook did not train on."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

from codeunlearn.core.config import RunConfig, TopicConfig
from codeunlearn.core.errors import ConfigError
from codeunlearn.data.corpus import split_train_test
from codeunlearn.data.topics import build_splits
from codeunlearn.pipeline.sweep import settings_key
from codeunlearn.pipeline.training_texts import training_texts, validation_seen_texts
from tests.unit.test_topics import _corpus, _topic


@pytest.fixture(scope="module")
def sides() -> tuple[pa.Table, pa.Table]:
    return split_train_test(_corpus(), 0.25)


def _texts(table: pa.Table) -> set[str]:
    return set(table.column("text").to_pylist())


def _seen_but(train: pa.Table, label: str, n_unseen: int, n_other_unseen: int) -> frozenset[str]:
    """Every train-side text trained on except the first n_unseen of `label` and n_other_unseen others."""
    rows = train.to_pylist()
    topic = [r["text"] for r in rows if r["label"] == label]
    other = [r["text"] for r in rows if r["label"] != label]
    return frozenset(topic[n_unseen:] + other[n_other_unseen:])


def test_unseen_validation_rows_are_texts_the_codebook_did_not_train_on(sides) -> None:
    train, test = sides
    seen = _seen_but(train, "food", n_unseen=12, n_other_unseen=200)
    topic = _topic(label="food", max_val_forget=10, max_val_retain=30, val_rows="unseen")
    splits = build_splits(train, test, topic, seed=0, trained_texts=seen)
    assert (splits.forget_val.num_rows, splits.retain_val.num_rows) == (10, 30)
    assert not _texts(splits.forget_val) & seen
    assert not _texts(splits.retain_val) & seen
    # Under the default the same texts are drawn as though none were known: mostly seen ones here.
    anywhere = build_splits(
        train, test, dataclasses.replace(topic, val_rows="any"), seed=0, trained_texts=seen
    )
    assert anywhere.forget_val.equals(
        build_splits(train, test, dataclasses.replace(topic, val_rows="any"), 0).forget_val
    )
    assert _texts(anywhere.forget_val) & seen


def test_too_few_unseen_texts_are_all_taken_and_seen_ones_fill_the_rest(sides) -> None:
    train, test = sides
    seen = _seen_but(train, "food", n_unseen=4, n_other_unseen=10)
    topic = _topic(label="food", max_val_forget=10, max_val_retain=30, val_rows="unseen")
    splits = build_splits(train, test, topic, seed=0, trained_texts=seen)
    assert splits.forget_val.num_rows == 10
    assert len(_texts(splits.forget_val) - seen) == 4  # every unseen food text, then 6 seen ones
    # The retain pool's 10 unseen rows are under the cap of 30: it is drawn from the whole pool.
    assert splits.retain_val.num_rows == 30 and _texts(splits.retain_val) & seen
    # Mining keeps every topic row validation did not take.
    assert not _texts(splits.forget_train) & _texts(splits.forget_val)


def test_an_unknown_val_rows_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"topic.val_rows='unsen'.*did you mean unseen.*any, unseen"):
        TopicConfig(label="food", val_rows="unsen").validate()


def test_the_seen_texts_are_the_training_sample_under_unseen_only(sides) -> None:
    train, _ = sides
    config = RunConfig()
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, max_examples=100))
    assert validation_seen_texts(config, train) == frozenset()
    unseen = dataclasses.replace(config, topic=dataclasses.replace(config.topic, val_rows="unseen"))
    seen = validation_seen_texts(unseen, train)
    assert len(seen) == 100 and seen <= _texts(train)
    assert settings_key(unseen, "codebook") != settings_key(config, "codebook")


def test_training_texts_reads_the_same_sample_as_given_rows(tmp_path, sides) -> None:
    from codeunlearn.core.paths import open_run
    from codeunlearn.data.tables import write_tables

    train, test = sides
    config = RunConfig()
    config = dataclasses.replace(
        config, run_dir=str(tmp_path), train=dataclasses.replace(config.train, max_examples=50)
    )
    write_tables(open_run(config).corpus_dir, {"train": train, "test": test}, {})
    unseen = dataclasses.replace(config, topic=dataclasses.replace(config.topic, val_rows="unseen"))
    assert (
        validation_seen_texts(unseen)
        == frozenset(training_texts(config))
        == validation_seen_texts(unseen, train)
    )
