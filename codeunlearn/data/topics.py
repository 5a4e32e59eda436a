"""Deletion-topic splits: forget (the topic), control (topic-free look-alikes) and retain (the rest).

Each side of the global train/test partition gives its own forget, control and retain sets, so no
evaluation example was seen while mining codes. The train side also gives validation forget and retain
sets, disjoint from mining's, so settings can be calibrated without reading the test side.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from codeunlearn.core.config import WORD_TOPIC_KINDS, TopicConfig
from codeunlearn.core.data_config import check_val_caps
from codeunlearn.core.errors import CodeunlearnError, ConfigError
from codeunlearn.data.controls import ControlMethod, control_method
from codeunlearn.data.corpus import content_hash
from codeunlearn.data.forgotten import without_forgotten
from codeunlearn.data.sampling import Draw
from codeunlearn.data.topic_rows import topic_pattern, topic_sides
from codeunlearn.data.topic_words import KEYWORD_FREE_COLUMN, keyword_free_split
from codeunlearn.data.validation_rows import carve_validation, unseen_if_enough

logger = logging.getLogger(__name__)

SPLIT_NAMES: tuple[str, ...] = (
    "forget_train",
    "forget_test",
    "control_train",
    "control_test",
    "retain_train",
    "retain_test",
    "forget_val",
    "retain_val",
)
# Validation splits and the split whose columns each has: directories prepared before validation
# splits existed lack their files and read them as empty tables.
VAL_SPLITS: dict[str, str] = {"forget_val": "forget_train", "retain_val": "retain_train"}
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Splits:
    """The split tables of one topic and a manifest of counts and content hashes (no raw text).

    Every table starts with `id`, `text`, `label`. Control tables add `source_id`, the forget example
    each control row stands for; word-swap controls hold only those four columns, since the corpus's
    other columns (e.g. WordNet's `gloss`) would still carry the topic words. Retain tables add
    `topic`, the row's label. `forget_test` adds `keyword_free`: the row contains none of the topic's
    words (codeunlearn.data.topic_words; absent from splits prepared before it existed).
    `retain_val` and `retain_test` hold no row of a topic the active mask already forgets (the
    manifest's `excluded_topics`, codeunlearn.data.forgotten).

    `forget_val` and `retain_val` are train-side rows outside every mining set (forget, control
    sources, control, retain), with the columns of `forget_train` and `retain_train`; they are empty
    when their cap is 0 or the splits were prepared before they existed (then the manifest has no
    entry for them).
    """

    forget_train: pa.Table
    forget_test: pa.Table
    control_train: pa.Table
    control_test: pa.Table
    retain_train: pa.Table
    retain_test: pa.Table
    forget_val: pa.Table
    retain_val: pa.Table
    manifest: dict[str, Any]

    def tables(self) -> dict[str, pa.Table]:
        """The split tables by name, in SPLIT_NAMES order."""
        return {name: getattr(self, name) for name in SPLIT_NAMES}


def build_splits(
    train: pa.Table,
    test: pa.Table,
    topic: TopicConfig,
    seed: int,
    forgotten: tuple[TopicConfig, ...] = (),
    trained_texts: AbstractSet[str] = frozenset(),
) -> Splits:
    """Cut the train and test corpora into forget, control and retain sets for one topic.

    Args:
        train: Train side of the corpus (`id`, `text`, optional `label`).
        test: Test side of the corpus, disjoint from `train`.
        topic: The deletion topic, its control construction and the size caps of each set.
        seed: Seed of every sample taken; the same seed gives identical splits.
        forgotten: Topics the active mask already forgets (codeunlearn.data.forgotten): their rows
            are left out of the validation and test retain sets, never out of the topic's own
            forget sets, nor out of mining's control and retain sets.
        trained_texts: The texts the codebook trained on; under topic.val_rows=unseen validation rows
            are drawn from the other train-side rows first (codeunlearn.pipeline.training_texts).

    Returns:
        The splits with their manifest; `forget_test` carries the keyword-free flag per row.

    Raises:
        ConfigError: A bad topic (two kinds, invalid regex, label topic on an unlabelled corpus,
            non-positive size cap, negative validation cap, unknown control or a swap control
            without words), a negative seed, or a corpus without `id`/`text`; a bad forgotten topic.
        MissingAssetError: The examples file (or a forgotten topic's) does not exist.
        CodeunlearnError: The topic matches nothing on one side of the corpus.
    """
    _check_sizes(topic, seed)
    control = control_method(topic)
    pattern = topic_pattern(topic) if topic.kind in WORD_TOPIC_KINDS else None
    train_side, test_side = topic_sides(
        _normalised(train, "train"), _normalised(test, "test"), topic, pattern
    )
    # Validation rows come out first, so mining keeps up to max_forget rows of a big topic; a fifth at
    # most, so a small topic keeps most of its rows for mining.
    n_val_forget = min(topic.max_val_forget, train_side.topic.num_rows // 5)
    seen = trained_texts if topic.val_rows == "unseen" else frozenset()
    forget_val, forget_pool = carve_validation(train_side.topic, n_val_forget, _rng(seed, "forget_val"), seen)
    forget_train = _sample(forget_pool, topic.max_forget, _rng(seed, "forget_train"))
    forget_test = _sample(test_side.topic, topic.max_eval_forget, _rng(seed, "forget_test"))
    control_source = _sample(forget_train, topic.max_control, _rng(seed, "control_source"))
    # Non-topic rows go by key order (codeunlearn.data.sampling), so every topic of a corpus takes the
    # same control and retain rows wherever its own rows leave them free.
    control_train, words_train = control.build(
        control_source, train_side.other, pattern, Draw(seed, "control_train")
    )
    control_test, words_test = control.build(
        forget_test, test_side.other, pattern, Draw(seed, "control_test")
    )
    retain_pool = _without(train_side.other, control_train)
    # Retain rows come from the far end of the control's order, so that a control takes a row that a
    # retain set would hold (and pushes it to another row for this topic alone) only when it uses up
    # almost every row of a length.
    retain_train = Draw(seed, "control_train", from_end=True).first(retain_pool, topic.max_retain)
    # After retain_train, which so stays the set it was before validation splits existed: the rest of
    # the corpus is rarely short of rows. Balanced over labels like retain_test, whose per-label quota
    # gives a small label as much weight as a big one: a validation set drawn in proportion to label size
    # is mostly the big labels and misjudges the test's retain drop.
    pools = without_forgotten(
        _without(retain_pool, retain_train), _without(test_side.other, control_test), forgotten
    )
    retain_val = Draw(seed, "retain_val").first_balanced(
        unseen_if_enough(pools.val, seen, topic.max_val_retain), topic.max_val_retain
    )
    retain_test = _stratified(pools.test, topic, Draw(seed, "control_test", from_end=True))
    if pools.excluded and (retain_val.num_rows == 0 or retain_test.num_rows == 0):
        raise CodeunlearnError(
            f"no retain rows are left for {topic.key} once the rows of the {len(pools.excluded)} topic(s) "
            "already forgotten are out: nothing is left to judge its collateral damage on; revert one of "
            "them (`codeunlearn request revert`) or use a corpus with more topics"
        )
    keyword_free, keyword_free_entry = keyword_free_split(
        forget_train, retain_train, forget_test, topic, pattern
    )
    tables = {
        "forget_train": forget_train,
        "forget_test": forget_test.append_column(KEYWORD_FREE_COLUMN, keyword_free),
        "control_train": control_train,
        "control_test": control_test,
        "retain_train": _with_topic_column(retain_train),
        "retain_test": _with_topic_column(retain_test),
        "forget_val": forget_val,
        "retain_val": _with_topic_column(retain_val),
    }
    _check_controls(tables, topic)
    words = {"control_train": words_train, "control_test": words_test} if control.name == "swap" else {}
    manifest = _manifest(topic, seed, tables, control, words)
    manifest["keyword_free"] = keyword_free_entry
    manifest["topic_rows"] = {"train": train_side.topic.num_rows, "test": test_side.topic.num_rows}
    if pools.excluded:
        manifest["excluded_topics"] = pools.excluded
    logger.info("topic %s: %s", topic.key, {name: table.num_rows for name, table in tables.items()})
    return Splits(**tables, manifest=manifest)


def train_side(train: pa.Table, test: pa.Table, topic: TopicConfig) -> tuple[pa.Table, pa.Table]:
    """The corpus's train side cut into the topic's rows and the other rows, as `build_splits` cuts it
    (the test side is read only to check that both hold the topic)."""
    pattern = topic_pattern(topic) if topic.kind in WORD_TOPIC_KINDS else None
    side, _ = topic_sides(_normalised(train, "train"), _normalised(test, "test"), topic, pattern)
    return side.topic, side.other


def write_splits(splits: Splits, directory: Path) -> None:
    """Write `<split>.parquet` for every split and `manifest.json`, replacing `directory` whole.

    Files go into a temporary sibling directory that is renamed onto the target only when every file
    is written and synced, so a crash leaves either the old directory or the new one, never a mix.

    Args:
        splits: The splits to write.
        directory: The target directory; an existing one is replaced.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.with_name(f".{directory.name}.tmp-{uuid.uuid4().hex[:12]}")
    staging.mkdir()
    try:
        for name, table in splits.tables().items():
            pq.write_table(table, staging / f"{name}.parquet")
        manifest = json.dumps(splits.manifest, indent=2, sort_keys=True, allow_nan=False)
        (staging / MANIFEST_FILE).write_text(manifest + "\n", encoding="utf-8")
        _fsync_files(staging)
        _replace_directory(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote splits to %s", directory)


def read_splits(directory: Path) -> Splits:
    """Read splits written by `write_splits`.

    Args:
        directory: The directory `write_splits` wrote.

    Returns:
        The splits with their manifest. A directory prepared before validation splits existed (no
        val files, no manifest entry for them) reads with empty validation tables and its manifest
        as written.

    Raises:
        CodeunlearnError: The directory, a split file or the manifest is missing or unreadable.
    """
    directory = Path(directory)
    mining_names = [name for name in SPLIT_NAMES if name not in VAL_SPLITS]
    _require(directory, [f"{name}.parquet" for name in mining_names] + [MANIFEST_FILE])
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
        listed = [name for name in VAL_SPLITS if name in manifest.get("splits", {})]
        _require(directory, [f"{name}.parquet" for name in listed])
        tables = {name: pq.read_table(directory / f"{name}.parquet") for name in mining_names + listed}
    except (OSError, ValueError) as error:
        raise CodeunlearnError(
            f"the splits at {directory} are unreadable ({error}): run `codeunlearn prepare` again"
        ) from error
    for name, columns_of in VAL_SPLITS.items():
        if name not in tables:
            tables[name] = tables[columns_of].schema.empty_table()
    return Splits(**tables, manifest=manifest)


def _require(directory: Path, names: list[str]) -> None:
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        what = "it does not exist" if not directory.is_dir() else f"missing {', '.join(missing)}"
        raise CodeunlearnError(f"no prepared splits at {directory} ({what}): run `codeunlearn prepare` first")


def _check_sizes(topic: TopicConfig, seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed={seed!r}: use a whole number of 0 or more")
    for name in ("max_forget", "max_control", "max_retain", "max_eval_forget", "max_eval_retain_per_topic"):
        value = getattr(topic, name)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"topic.{name}={value!r}: set it to a whole number of 1 or more")
    check_val_caps(topic)  # a TopicConfig built in code has not been through validate()


def _normalised(table: pa.Table, side: str) -> pa.Table:
    for name in ("id", "text"):
        if name not in table.column_names:
            raise ConfigError(
                f"the {side} corpus has no column {name!r}; its columns are: "
                f"{', '.join(table.column_names)}. Load it with codeunlearn.data.corpus.load_corpus"
            )
    table = table.filter(pc.is_valid(table.column("text")))  # load_corpus drops these already
    if "label" not in table.column_names:
        return table.append_column("label", pa.nulls(table.num_rows, pa.string()))
    if table.column("label").type != pa.string():
        table = table.set_column(
            table.column_names.index("label"), "label", pc.cast(table["label"], pa.string())
        )
    return table


def _rng(seed: int, purpose: str) -> np.random.Generator:
    return Draw(seed, purpose).rng()


def _sample(table: pa.Table, limit: int, rng: np.random.Generator) -> pa.Table:
    if table.num_rows <= limit:
        return table
    # Sorted, so a sample keeps the corpus's order and reads like it.
    return table.take(np.sort(rng.choice(table.num_rows, size=limit, replace=False)))


def _without(table: pa.Table, rows: pa.Table) -> pa.Table:
    # Length-matched controls are real corpus rows: taking them (and retain_train) out of the rows retain
    # sets are drawn from keeps the sets disjoint.
    mask = pc.is_in(table.column("id"), value_set=pa.array(rows.column("id").to_pylist(), type=pa.string()))
    return table.filter(pc.invert(mask))


def _stratified(pool: pa.Table, topic: TopicConfig, draw: Draw) -> pa.Table:
    """Per label, the first `max_eval_retain_per_topic` rows in `draw`'s order (corpus order kept)."""
    labels = pool.column("label").to_pylist()
    if all(label is None for label in labels):
        return draw.first(pool, topic.max_eval_forget)
    labelled = np.array([label is not None for label in labels], dtype=bool)
    picked = np.flatnonzero(labelled & (draw.turns(pool) < topic.max_eval_retain_per_topic))
    return pool.take(picked)


def _with_topic_column(table: pa.Table) -> pa.Table:
    if "topic" in table.column_names:
        table = table.drop_columns(["topic"])
    return table.append_column("topic", table.column("label"))


def _check_controls(tables: dict[str, pa.Table], topic: TopicConfig) -> None:
    for name in ("control_train", "control_test"):
        if tables[name].num_rows == 0:
            raise CodeunlearnError(
                f"topic {topic.name}: {name} is empty (no non-topic example or no swappable word); "
                "choose a topic that leaves other examples in the corpus"
            )


def _manifest(
    topic: TopicConfig,
    seed: int,
    tables: dict[str, pa.Table],
    control: ControlMethod,
    words: dict[str, list[str]],
) -> dict[str, Any]:
    splits: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        entry: dict[str, Any] = {
            "count": table.num_rows,
            "content_hash": content_hash(table.column("text").to_pylist()),
        }
        if name.startswith("control_"):
            entry["control_method"] = control.recorded_as
        if name in words:
            entry["replacement_words"] = words[name]
        splits[name] = entry
    return {
        "topic": topic.name,
        "kind": topic.kind,
        "seed": int(seed),
        "control": topic.control,  # as configured; control_method is what it resolved to
        "control_method": control.recorded_as,
        "splits": splits,
    }


def _fsync_files(directory: Path) -> None:
    # Data must reach the disk before the rename publishes it, or a crash could expose empty files.
    for path in directory.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())


def _replace_directory(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)  # a single atomic rename
        return
    # POSIX cannot rename onto a non-empty directory: move the old one aside, then swap in the new one.
    backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
    os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)
