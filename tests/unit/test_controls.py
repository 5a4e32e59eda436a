"""Control-set constructions on tiny tables, `topic.control` validation, and the counts key it enters."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from codeunlearn.core.config import CONTROL_CHOICES, TopicConfig, load_config
from codeunlearn.core.errors import CodeunlearnError, ConfigError
from codeunlearn.core.paths import RunPaths
from codeunlearn.data.controls import (
    CONTROL_METHODS,
    balanced_sample,
    control_method,
    length_matched_sample,
    random_sample,
    word_swap,
)
from codeunlearn.data.corpus import split_train_test
from codeunlearn.data.sampling import Draw
from codeunlearn.data.topics import Splits, build_splits
from codeunlearn.pipeline import stages as pipeline


def _table(prefix: str, lengths: list[int]) -> pa.Table:
    return pa.table(
        {
            "id": [f"{prefix}{i}" for i in range(len(lengths))],
            "text": ["x" * n for n in lengths],
            "label": ["t"] * len(lengths),
        }
    )


FORGET = _table("f", [10, 40, 70])
POOL = _table("p", [5, 11, 20, 28, 39, 50, 63, 71, 90, 120])


def test_every_choice_but_auto_is_a_registered_construction() -> None:
    assert set(CONTROL_METHODS) | {"auto"} == set(CONTROL_CHOICES)


def test_length_matched_pairs_each_forget_example_with_the_nearest_length() -> None:
    control, words = length_matched_sample(FORGET, POOL, None, Draw(0, "control_train"))
    assert control.column("id").to_pylist() == ["p1", "p4", "p7"]  # lengths 11, 39, 71
    assert control.column("source_id").to_pylist() == ["f0", "f1", "f2"] and words == []


def test_random_draws_without_length_matching_and_reproducibly() -> None:
    control, words = random_sample(FORGET, POOL, None, Draw(0, "control_train"))
    again, _ = random_sample(FORGET, POOL, None, Draw(0, "control_train"))
    assert control.equals(again) and words == []
    ids = control.column("id").to_pylist()
    assert len(set(ids)) == 3 and set(ids) <= set(POOL.column("id").to_pylist())
    assert ids != ["p1", "p4", "p7"]  # not the length-matched picks
    assert control.column("source_id").to_pylist() == ["f0", "f1", "f2"]
    small, _ = random_sample(FORGET, POOL.slice(0, 2), None, Draw(0, "control_train"))
    assert small.num_rows == 2  # a short pool gives what it has


def _old_length_matched_gaps(forget: np.ndarray, pool: np.ndarray, seed: int) -> list[int]:
    """The length gaps of the construction before key order: ties among equal lengths broken at random."""
    lengths = pool[np.random.default_rng(seed).permutation(len(pool))]
    lengths = lengths[np.argsort(lengths, kind="stable")]
    used, gaps = np.zeros(len(lengths), dtype=bool), []
    for target in forget:
        right = int(np.searchsorted(lengths, target))
        left = right - 1
        while left >= 0 and used[left]:
            left -= 1
        while right < len(lengths) and used[right]:
            right += 1
        candidates = [i for i in (left, right) if 0 <= i < len(lengths)]
        if not candidates:
            break
        pick = min(candidates, key=lambda i: abs(int(lengths[i]) - int(target)))
        used[pick] = True
        gaps.append(abs(int(lengths[pick]) - int(target)))
    return gaps


@pytest.mark.parametrize("seed", range(4))
def test_length_matched_gaps_are_those_of_a_random_tie_break(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = np.clip(rng.normal(60, 15, 300).round(), 1, None).astype(int)
    forget = np.clip(rng.normal(70, 20, 150).round(), 1, None).astype(int)  # longer: some go unmatched
    control, _ = length_matched_sample(_table("f", forget), _table("p", pool), None, Draw(seed, "c"))
    gaps = [
        abs(len(text) - int(n)) for text, n in zip(control.column("text").to_pylist(), forget, strict=True)
    ]
    old = _old_length_matched_gaps(forget, pool, seed)
    assert gaps == old and np.mean(gaps) > 1  # the same gap for every forget example, not all exact
    assert len(set(control.column("id").to_pylist())) == len(forget)


def _key_order(ids: list[str], draw: Draw) -> list[str]:
    return [ids[i] for i in np.argsort(draw.keys(ids), kind="stable")]


def test_balanced_gives_a_small_label_its_turn_where_length_matching_would_not() -> None:
    # One big label of 90 rows and three small ones of 3 rows, every row the forget examples' length.
    labels = ["big"] * 90 + ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    pool = pa.table({"id": [f"p{i}" for i in range(99)], "text": ["x" * 10] * 99, "label": labels})
    forget = _table("f", [10] * 6)
    draw = Draw(0, "control_train")
    balanced, words = balanced_sample(forget, pool, None, draw)
    plain, _ = length_matched_sample(forget, pool, None, draw)
    assert words == [] and balanced.num_rows == 6
    assert balanced.column("source_id").to_pylist() == [f"f{i}" for i in range(6)]
    assert set(balanced.column("label").to_pylist()) - {"big"}  # small labels take part
    assert balanced.equals(balanced_sample(forget, pool, None, draw)[0])
    assert _n_labels(plain) <= _n_labels(balanced)


def _n_labels(table: pa.Table) -> int:
    return pc.count_distinct(table.column("label")).as_py()


def test_length_matched_takes_equal_lengths_in_key_order_whatever_else_the_pool_holds() -> None:
    draw = Draw(3, "control_train")
    pool = _table("p", [10] * 12 + [30] * 12)
    forget = _table("f", [10, 10, 10, 30])
    control, _ = length_matched_sample(forget, pool, None, draw)
    ids = pool.column("id").to_pylist()
    short, long = _key_order(ids[:12], draw), _key_order(ids[12:], draw)
    assert control.column("id").to_pylist() == short[:3] + long[:1]
    # Rows another topic holds leave the pool: the others chosen stay, the next in key order fills in.
    mask = pa.array([row_id not in (short[1], long[5]) for row_id in ids])
    fewer, _ = length_matched_sample(forget, pool.filter(mask), None, draw)
    assert fewer.column("id").to_pylist() == [short[0], short[2], short[3], long[0]]
    other_seed, _ = length_matched_sample(forget, pool, None, Draw(4, "control_train"))
    assert other_seed.column("id").to_pylist() != control.column("id").to_pylist()


def test_random_takes_the_first_rows_in_key_order() -> None:
    draw = Draw(0, "control_train")
    ids = POOL.column("id").to_pylist()
    first = _key_order(ids, draw)[:3]
    control, _ = random_sample(FORGET, POOL, None, draw)
    assert control.column("id").to_pylist() == [row_id for row_id in ids if row_id in first]  # corpus order
    without = POOL.filter(pa.array([row_id != first[0] for row_id in ids]))
    fewer, _ = random_sample(FORGET, without, None, draw)
    assert set(fewer.column("id").to_pylist()) == set(_key_order(ids, draw)[1:4])


def test_a_draw_key_depends_on_seed_stream_and_id_only() -> None:
    draw = Draw(0, "retain_train")
    keys = draw.keys(["a", "b", "c"])
    assert keys.dtype == np.uint64 and draw.keys(["c", "a"]).tolist() == [keys[2], keys[0]]
    assert Draw(1, "retain_train").keys(["a"])[0] != keys[0] != Draw(0, "retain_val").keys(["a"])[0]
    table = pa.table({"id": ["a", "b", "c", "d"]})
    ranks = draw.ranks(table)
    assert sorted(ranks.tolist()) == [0, 1, 2, 3]
    assert Draw(0, "retain_train", from_end=True).ranks(table).tolist() == (3 - ranks).tolist()
    assert draw.first(table, 2).column("id").to_pylist() == [
        i for i, r in zip("abcd", ranks, strict=True) if r < 2
    ]


def test_swap_needs_words() -> None:
    with pytest.raises(ConfigError, match="needs the topic's words.*length_matched or random"):
        word_swap(FORGET, POOL, None, Draw(0, "control_train"))
    swapped, words = word_swap(
        _table("f", [3]).set_column(1, "text", pa.array(["Bread and jam"])),
        POOL,
        re.compile(r"\bbread\b", re.I),
        Draw(0, "control_train"),
    )
    assert swapped.column("text").to_pylist()[0].endswith(" and jam") and len(words) == 1


def test_auto_resolves_by_topic_kind() -> None:
    assert control_method(TopicConfig(label="noun.food")).name == "length_matched"
    assert control_method(TopicConfig(label=None, keywords=("love",))).name == "swap"
    assert control_method(TopicConfig(label=None, regex="lov(e|ing)", control="random")).name == "random"


def test_swap_is_refused_for_a_label_topic_with_the_fix() -> None:
    with pytest.raises(ConfigError) as error:
        control_method(TopicConfig(label="noun.food", control="swap"))
    message = str(error.value)
    assert "topic.control=swap" in message and "label" in message and "no words to swap" in message
    assert "topic.control=length_matched or random" in message


def test_an_unknown_control_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as error:
        control_method(TopicConfig(label="noun.food", control="lenght_matched"))
    message = str(error.value)
    assert "topic.control='lenght_matched'" in message and "did you mean length_matched?" in message
    assert "auto, swap, length_matched, balanced, random" in message


def test_control_is_checked_when_the_config_loads() -> None:
    with pytest.raises(ConfigError, match="no words to swap"):
        load_config(None, ["topic.control=swap"])  # the default topic is the label noun.food
    with pytest.raises(ConfigError, match="use one of auto, swap, length_matched, balanced, random"):
        load_config(None, ["topic.control=shuffled"])
    assert load_config(None, ["topic.keywords=[love]", "topic.control=swap"]).topic.control == "swap"
    with pytest.raises(ConfigError, match="topic.control=random swaps none"):
        load_config(None, ["topic.keywords=[love]", "topic.control=random", "mining.positions=topic_words"])


def _corpus() -> pa.Table:
    rows = []
    for i in range(400):
        label = ("food", "tool", "place", "animal")[i % 4]
        text = f"A {label} text number {i}" + ", and more" * (i % 11) + "."
        rows.append({"id": f"r{i:04d}", "text": text, "label": label})
    return pa.Table.from_pylist(rows)


def _length_gaps(splits) -> list[int]:
    forget = dict(zip(*(splits.forget_train.column(c).to_pylist() for c in ("id", "text")), strict=True))
    pairs = zip(*(splits.control_train.column(c).to_pylist() for c in ("source_id", "text")), strict=True)
    return [abs(len(forget[source]) - len(text)) for source, text in pairs]


def test_build_splits_records_each_construction() -> None:
    sides = split_train_test(_corpus(), 0.25)
    topic = TopicConfig(label="food", max_forget=40, max_control=40, max_retain=60, max_eval_forget=10)
    by_control = {name: build_splits(*sides, replace(topic, control=name), 0) for name in ("auto", "random")}
    by_control["length_matched"] = build_splits(*sides, replace(topic, control="length_matched"), 0)
    auto, random, matched = by_control["auto"], by_control["random"], by_control["length_matched"]
    assert (auto.manifest["control"], auto.manifest["control_method"]) == ("auto", "length_matched_sample")
    assert matched.control_train.equals(auto.control_train)  # auto is length_matched for a label topic
    assert (random.manifest["control"], random.manifest["control_method"]) == ("random", "random_sample")
    assert random.manifest["splits"]["control_train"]["control_method"] == "random_sample"
    assert max(_length_gaps(matched)) <= 3 < np.mean(_length_gaps(random))
    for splits in (random, matched):
        assert set(splits.control_train.column("label").to_pylist()) <= {"tool", "place", "animal"}
        retain_ids = set(splits.retain_train.column("id").to_pylist())
        assert not retain_ids & set(splits.control_train.column("id").to_pylist())


def test_a_keyword_topic_may_take_a_sampled_control() -> None:
    sides = split_train_test(_corpus(), 0.25)
    topic = TopicConfig(label=None, keywords=("food",), control="length_matched", max_control=30)
    splits = build_splits(*sides, topic, 0)
    assert splits.manifest["control_method"] == "length_matched_sample"
    assert "replacement_words" not in splits.manifest["splits"]["control_train"]
    assert not any("food" in text for text in splits.control_train.column("text").to_pylist())


def _splits_with(control: str, control_hash: str) -> Splits:
    empty = pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())})
    manifest = {
        "splits": {"forget_train": {"content_hash": "f"}, "control_train": {"content_hash": control_hash}},
        **({"control": control} if control else {}),
    }
    return Splits(*[empty] * 8, manifest=manifest)


def test_a_changed_control_never_shares_a_counts_run(tmp_path) -> None:
    config = load_config(None, [f"run_dir={tmp_path}"])
    before = pipeline._counts_run_id(config, _splits_with("", "c1"))  # prepared before topic.control
    assert pipeline._counts_run_id(config, _splits_with("auto", "c2")) == before  # auto keeps its key
    random = pipeline._counts_run_id(config, _splits_with("random", "c1"))
    assert random != before
    assert pipeline._counts_run_id(config, _splits_with("random", "c3")) != random  # another control set
    with pytest.raises(CodeunlearnError, match="prepared with topic.control=random.*prepare"):
        pipeline._check_prepared_control(config, _splits_with("random", "c1"), RunPaths(tmp_path))


def test_a_retrained_model_never_shares_a_counts_run(tmp_path) -> None:
    config = load_config(None, [f"run_dir={tmp_path}"])
    splits = _splits_with("auto", "c1")
    first = pipeline._counts_run_id(config, splits, "weights-a")
    assert pipeline._counts_run_id(config, splits, "weights-a") == first
    assert pipeline._counts_run_id(config, splits, "weights-b") != first


def test_first_balanced_gives_every_label_its_turn() -> None:
    labels = ["big"] * 40 + ["mid"] * 10 + ["small"] * 2 + [None] * 5
    table = pa.table({"id": [f"r{i}" for i in range(len(labels))], "label": labels})
    draw = Draw(3, "retain_val")
    picked = draw.first_balanced(table, 20)
    counts = {label: picked.column("label").to_pylist().count(label) for label in set(labels)}
    # small runs out after two rows and None after five; big and mid share the rest, one apart
    assert (counts["small"], counts[None]) == (2, 5)
    assert sorted((counts["big"], counts["mid"])) == [6, 7]
    # within a label the rows are that label's first in the stream's order, in the table's order
    for label in ("big", "mid"):
        own = table.filter(pc.equal(table.column("label"), label))
        chosen = picked.filter(pc.equal(picked.column("label"), label))
        assert chosen.column("id").to_pylist() == draw.first(own, counts[label]).column("id").to_pylist()
    assert draw.first_balanced(table, 100).equals(table)
