"""Training texts with general prose mixed in (train.general_text, train.general_fraction)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codeunlearn.core.config import ConfigError, RunConfig, TrainConfig, load_config
from codeunlearn.core.paths import RunPaths
from codeunlearn.evaluation.general_text import training_passages
from codeunlearn.pipeline.training_texts import training_texts
from codeunlearn.training.stamp import same_training, training_stamp


def corpus_run(tmp_path: Path, rows: int = 40) -> RunPaths:
    paths = RunPaths(tmp_path / "run")
    paths.corpus_dir.mkdir(parents=True)
    texts = [f"lemma{i}: gloss number {i}" for i in range(rows)]
    pq.write_table(
        pa.table({"id": [str(i) for i in range(rows)], "text": texts}), paths.corpus_dir / "train.parquet"
    )
    return paths


def prose_file(tmp_path: Path, passages: int = 30) -> Path:
    path = tmp_path / "prose.txt"
    path.write_text(
        "\n\n".join(
            f"Passage {i} " + "of ordinary prose, long enough to count. " * 3 for i in range(passages)
        )
    )
    return path


def config_for(paths: RunPaths, **train: object) -> RunConfig:
    return RunConfig(run_dir=str(paths.root), train=TrainConfig(max_examples=20, **train))


def test_no_general_text_keeps_the_corpus_sample(tmp_path):
    paths = corpus_run(tmp_path)
    texts = training_texts(config_for(paths))
    assert len(texts) == 20 and all(t.startswith("lemma") for t in texts)
    assert texts == training_texts(config_for(paths, general_fraction=0.5))  # no source: no mixture


def test_general_fraction_of_the_examples_come_from_the_general_text(tmp_path):
    paths, prose = corpus_run(tmp_path), prose_file(tmp_path)
    plain = training_texts(config_for(paths))
    mixed = training_texts(config_for(paths, general_text=str(prose), general_fraction=0.25))
    corpus = [t for t in mixed if t.startswith("lemma")]
    general = [t for t in mixed if t.startswith("Passage")]
    assert (len(corpus), len(general)) == (15, 5)
    assert set(corpus) <= set(plain) and len(set(general)) == 5
    assert mixed == training_texts(config_for(paths, general_text=str(prose), general_fraction=0.25))


def test_training_passages_are_a_seeded_sample_in_source_order(tmp_path):
    prose = prose_file(tmp_path)
    first, again = training_passages(str(prose), 8, seed=3), training_passages(str(prose), 8, seed=3)
    assert first == again and len(set(first)) == 8
    numbers = [int(t.split()[1]) for t in first]
    assert numbers == sorted(numbers)
    assert training_passages(str(prose), 8, seed=4) != first
    assert len(training_passages(str(prose), 100, seed=0)) == 30  # all of them when fewer


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.general_fraction=1.0", "train.general_fraction=1.0"),
        ("train.general_text=/no/such/file.txt", "neither 'debian-handbook' nor a file"),
    ],
)
def test_bad_mixture_settings_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_models_trained_before_the_mixture_existed_are_still_reused():
    current = training_stamp(RunConfig())
    before = {**current, "train": {k: v for k, v in current["train"].items() if not k.startswith("general")}}
    assert same_training(before, current)
    mixed = training_stamp(RunConfig(train=TrainConfig(general_text="debian-handbook")))
    assert not same_training(before, mixed)


def test_excluded_labels_leave_training_but_not_its_size(tmp_path):
    paths = RunPaths(tmp_path / "run")
    paths.corpus_dir.mkdir(parents=True)
    labels = ["Law", "Bot.", "Zool."] * 20
    texts = [f"lemma{i}: a gloss of {label}" for i, label in enumerate(labels)]
    pq.write_table(
        pa.table({"id": [str(i) for i in range(60)], "text": texts, "label": labels}),
        paths.corpus_dir / "train.parquet",
    )
    everything = training_texts(config_for(paths))
    without = training_texts(config_for(paths, exclude_labels=("Law",)))
    assert any(t.endswith("Law") for t in everything)
    assert len(without) == 20 and not any(t.endswith("Law") for t in without)
    with pytest.raises(ConfigError, match=r"\['Laws'\] not among the corpus's labels"):
        training_texts(config_for(paths, exclude_labels=("Laws",)))
    with pytest.raises(ConfigError, match="needs a labelled corpus"):
        training_texts(config_for(corpus_run(tmp_path / "plain"), exclude_labels=("Law",)))
    # a model trained before the setting existed is the same training as one with nothing excluded
    stamp = training_stamp(config_for(paths))
    old = {**stamp, "train": {k: v for k, v in stamp["train"].items() if k != "exclude_labels"}}
    assert same_training(old, stamp)
    assert not same_training(stamp, training_stamp(config_for(paths, exclude_labels=("Law",))))
