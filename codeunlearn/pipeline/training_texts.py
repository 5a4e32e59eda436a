"""The texts a codebook is trained on."""

from __future__ import annotations

import logging

import numpy as np

from codeunlearn.core.config import RunConfig
from codeunlearn.core.paths import run_paths
from codeunlearn.data.tables import read_table
from codeunlearn.evaluation.general_text import training_passages

log = logging.getLogger(__name__)


def training_texts(config: RunConfig) -> list[str]:
    """A seeded sample of the train partition (the codebook is trained once, for every topic), with
    `train.general_fraction` of the examples taken from `train.general_text` when that is set."""
    train = config.train
    n_general = round(train.general_fraction * train.max_examples) if train.general_text else 0
    train_rows = read_table(run_paths(config).corpus_dir / "train.parquet")
    rng = np.random.default_rng(train.seed)
    picks = rng.permutation(train_rows.num_rows)[: train.max_examples - n_general]
    texts = train_rows.column("text").to_pylist()
    corpus = [texts[i] for i in sorted(picks)]
    if not n_general:
        return corpus
    general = training_passages(train.general_text, n_general, train.seed)
    log.info("training texts: %d corpus examples and %d general-text passages", len(corpus), len(general))
    return corpus + general  # batching groups texts by length and training shuffles the batches
