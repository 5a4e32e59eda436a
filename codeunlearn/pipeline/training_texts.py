"""The texts a codebook is trained on."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codeunlearn.core.config import ConfigError, RunConfig
from codeunlearn.core.paths import run_paths
from codeunlearn.data.labelled_texts import label_counts
from codeunlearn.data.tables import corpus_sides, read_table
from codeunlearn.evaluation.general_text import training_passages
from codeunlearn.training.code_routes import CodeRoutes, TextRoutes

log = logging.getLogger(__name__)


def training_texts(config: RunConfig) -> list[str]:
    """A seeded sample of the train partition (the codebook is trained once, for every topic), with
    `train.general_fraction` of the examples taken from `train.general_text` when that is set, and
    none of the labels `train.exclude_labels` names.

    Raises:
        ConfigError: an excluded label the train partition does not hold (a typo would exclude nothing).
    """
    return training_sample(config)[0]


def validation_seen_texts(config: RunConfig, train_rows: pa.Table | None = None) -> frozenset[str]:
    """The texts validation rows are drawn from last under topic.val_rows=unseen: those the codebook
    trains on (`train_rows`: the train partition, read from the run when None); empty otherwise."""
    if config.topic.val_rows != "unseen":
        return frozenset()
    return frozenset(training_sample(config, train_rows)[0])


def training_sample(
    config: RunConfig, train_rows: pa.Table | None = None
) -> tuple[list[str], list[str | None]]:
    """The training texts (as `training_texts`) and each one's label (None: unlabelled or general text).
    `train_rows`: the train partition, read from the run when None."""
    train = config.train
    n_general = round(train.general_fraction * train.max_examples) if train.general_text else 0
    if train_rows is None:
        train_rows = read_table(run_paths(config).corpus_dir / "train.parquet")
    if train.exclude_labels:
        train_rows = _without_labels(train_rows, train.exclude_labels)
    rng = np.random.default_rng(train.seed)
    picks = sorted(rng.permutation(train_rows.num_rows)[: train.max_examples - n_general])
    texts = train_rows.column("text").to_pylist()
    labels = train_rows.column("label").to_pylist() if "label" in train_rows.column_names else None
    corpus = [texts[i] for i in picks]
    corpus_labels = [labels[i] for i in picks] if labels else [None] * len(corpus)
    if not n_general:
        return corpus, corpus_labels
    general = training_passages(train.general_text, n_general, train.seed)
    log.info("training texts: %d corpus examples and %d general-text passages", len(corpus), len(general))
    # batching groups texts by length and training shuffles the batches
    return corpus + general, corpus_labels + [None] * len(general)


def training_routes(config: RunConfig, labels: list[str | None]) -> TextRoutes | None:
    """The code routes of training texts with these labels (train.route_codes; None when off): every
    label with train.route_min_examples examples over both sides of the corpus reserves its codes.

    Raises:
        ConfigError: routes asked of an unlabelled corpus, or more codes reserved than the codebook has.
    """
    train = config.train
    if not train.route_codes:
        return None
    sides = corpus_sides(run_paths(config))
    if "label" not in sides[0].column_names:
        raise ConfigError("train.route_codes needs a labelled corpus (data.label_column); this one has none")
    routed = sorted(label for label, n in label_counts(*sides).items() if n >= train.route_min_examples)
    bottleneck = config.bottleneck
    routes = CodeRoutes.reserve(routed, train.route_codes, bottleneck.n_codes, bottleneck.top_k)
    log.info(
        "code routes: %d labels reserve %d codes each, %d shared",
        len(routed),
        routes.per_label,
        routes.n_shared,
    )
    return TextRoutes(routes, routes.route_ids(labels))


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
