"""The prepared tables of a run directory, read and written atomically, and texts batched for a model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from codeunlearn.core.config import RunConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.file_lock import write_durably
from codeunlearn.core.paths import RunPaths, run_paths
from codeunlearn.data.batching import Batch, encode_texts, make_batches
from codeunlearn.data.positions import Span, token_flags
from codeunlearn.data.topics import train_side


def write_tables(directory: Path, tables: dict[str, pa.Table], manifest: dict) -> None:
    """Write `tables` as `<name>.parquet` plus manifest.json, replacing `directory` in one rename."""
    partial = directory.with_name(directory.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, partial / f"{name}.parquet")
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(partial, directory)


def read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise CodeunlearnError(f"{path} is missing: run `codeunlearn prepare` with the same run_dir first")
    return pq.read_table(path)


def write_json(path: Path, payload: dict) -> None:
    """Write `payload` as JSON at `path`, atomically and durably (`write_durably`)."""
    write_durably(path, json.dumps(payload, indent=2, default=float))


def corpus_sides(paths: RunPaths) -> tuple[pa.Table, pa.Table]:
    """The prepared corpus's train and test partitions."""
    return read_table(paths.corpus_dir / "train.parquet"), read_table(paths.corpus_dir / "test.parquet")


def train_side_texts(config: RunConfig, other_limit: int) -> tuple[list[str], list[str]]:
    """Every training text of the config's topic, and up to `other_limit` training texts outside it
    drawn with the run's seed (the held-out evaluation never sees either): one read of the corpus."""
    topic, other = train_side(*corpus_sides(run_paths(config)), config.topic)
    rng = np.random.default_rng(config.seed)
    rows = np.sort(rng.choice(other.num_rows, min(other_limit, other.num_rows), replace=False))
    return topic.column("text").to_pylist(), other.take(rows).column("text").to_pylist()


def other_train_texts(config: RunConfig, limit: int) -> list[str]:
    """Up to `limit` training texts outside the topic, as `train_side_texts` draws them."""
    return train_side_texts(config, limit)[1]


def batch_texts(
    texts: list[str], tokenizer, max_length: int, batch_size: int, spans: list[list[Span]] | None = None
) -> list[Batch]:
    """Batches of BOS + text (truncated to `max_length`, the run's data.max_length); with `spans`,
    mining counts only the tokens that overlap them."""
    ids = encode_texts(tokenizer, texts, max_length)
    flags = None
    if spans is not None:
        flags = [f[: len(i)] for f, i in zip(token_flags(tokenizer, texts, spans, lead=1), ids, strict=True)]
    return make_batches(ids, batch_size, tokenizer.pad_token_id, flags)
