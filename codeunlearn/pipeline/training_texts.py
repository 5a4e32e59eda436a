"""The texts a codebook is trained on."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codeunlearn.core.config import ConfigError, RunConfig
from codeunlearn.core.paths import run_paths
from codeunlearn.data.tables import read_table
from codeunlearn.evaluation.general_text import training_passages

log = logging.getLogger(__name__)


def training_texts(config: RunConfig) -> list[str]:
    """A seeded sample of the train partition (the codebook is trained once, for every topic), with
    `train.general_fraction` of the examples taken from `train.general_text` when that is set, and
    none of the labels `train.exclude_labels` names.

    Raises:
        ConfigError: an excluded label the train partition does not hold (a typo would exclude nothing).
    """
    train = config.train
    n_general = round(train.general_fraction * train.max_examples) if train.general_text else 0
    train_rows = read_table(run_paths(config).corpus_dir / "train.parquet")
    if train.exclude_labels:
        train_rows = _without_labels(train_rows, train.exclude_labels)
    rng = np.random.default_rng(train.seed)
    picks = rng.permutation(train_rows.num_rows)[: train.max_examples - n_general]
    texts = train_rows.column("text").to_pylist()
    corpus = [texts[i] for i in sorted(picks)]
    if not n_general:
        return corpus
    general = training_passages(train.general_text, n_general, train.seed)
    log.info("training texts: %d corpus examples and %d general-text passages", len(corpus), len(general))
    return corpus + general  # batching groups texts by length and training shuffles the batches


def _without_labels(rows: pa.Table, labels: tuple[str, ...]) -> pa.Table:
    if "label" not in rows.column_names:
        raise ConfigError(
            "train.exclude_labels needs a labelled corpus (data.label_column); this one has none"
        )
    present = set(rows.column("label").to_pylist())
    unknown = sorted(set(labels) - present)
    if unknown:
        raise ConfigError(
            f"train.exclude_labels={list(labels)}: {unknown} not among the corpus's labels (e.g. "
            f"{sorted(present)[:5]}): name labels as `codeunlearn sweep` lists them"
        )
    kept = rows.filter(pc.invert(pc.is_in(rows.column("label"), value_set=pa.array(list(labels)))))
    log.info("training leaves out %d texts of %s", rows.num_rows - kept.num_rows, ", ".join(labels))
    return kept
