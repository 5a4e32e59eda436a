"""Corpus loading from WordNet, files and saved datasets; the id-hash train/test split; content hashes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

# `datasets` reads these once, when first imported; no test may reach a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pyarrow as pa  # noqa: E402
import pyarrow.csv as pa_csv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from codeunlearn.core.config import DataConfig  # noqa: E402
from codeunlearn.core.errors import CodeunlearnError, ConfigError, MissingAssetError  # noqa: E402
from codeunlearn.data.corpus import content_hash, load_corpus, split_train_test  # noqa: E402

RECORDS = [
    {"id": 10, "content": "apples are red", "topic": 1},
    {"id": 11, "content": "pears are green", "topic": 2},
    {"id": 12, "content": "   ", "topic": 1},
    {"id": 13, "content": None, "topic": 2},
    {"id": 14, "content": "plums are purple", "topic": None},
]


def _config(path: Path, **changes: object) -> DataConfig:
    return DataConfig(corpus=str(path), text_column="content", label_column="topic", **changes)


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="WordNet 3.0 is not installed")
def test_wordnet_corpus_keeps_its_columns() -> None:
    table = load_corpus(DataConfig(corpus="wordnet", wordnet_pos=("adv",)))
    assert table.num_rows == 3621
    assert table.column_names[:3] == ["id", "text", "label"]
    assert {"lexname", "lemmas", "gloss", "offset", "pos"} <= set(table.column_names)
    assert set(table.column("label").to_pylist()) == {"adv.all"}


def test_parquet_renames_columns_and_drops_empty_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path)
    with caplog.at_level(logging.WARNING, logger="codeunlearn.data.corpus"):
        table = load_corpus(_config(path))
    assert table.column_names == ["id", "text", "label"]
    assert table.schema.field("id").type == pa.string()
    assert table.schema.field("label").type == pa.string()
    assert table.to_pylist() == [
        {"id": "10", "text": "apples are red", "label": "1"},
        {"id": "11", "text": "pears are green", "label": "2"},
        {"id": "14", "text": "plums are purple", "label": None},
    ]
    assert "dropped 2 rows with empty or null text" in caplog.text


def test_missing_column_names_column_file_and_existing_columns(tmp_path: Path) -> None:
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path)
    with pytest.raises(ConfigError) as error:
        load_corpus(DataConfig(corpus=str(path), text_column="body"))
    message = str(error.value)
    assert (
        f"{path} has no column 'body'; its columns are: id, content, topic. Set data.text_column" in message
    )
    with pytest.raises(ConfigError, match="no column 'kind'.*Set data.label_column"):
        load_corpus(DataConfig(corpus=str(path), text_column="content", label_column="kind"))
    # The default label column is optional: a file without it loads with null labels.
    unlabelled = load_corpus(DataConfig(corpus=str(path), text_column="content"))
    assert unlabelled.column("label").null_count == unlabelled.num_rows


def test_json_array_and_json_lines_give_the_same_table(tmp_path: Path) -> None:
    array_path, lines_path, json_lines_path = tmp_path / "a.json", tmp_path / "b.jsonl", tmp_path / "c.json"
    array_path.write_text(json.dumps(RECORDS, indent=2))
    lines = "\n".join(json.dumps(record) for record in RECORDS) + "\n"
    lines_path.write_text(lines)
    json_lines_path.write_text(lines)
    tables = [load_corpus(_config(path)) for path in (array_path, lines_path, json_lines_path)]
    assert tables[0].num_rows == 3
    assert tables[0].to_pylist() == tables[1].to_pylist() == tables[2].to_pylist()


def test_csv_without_ids_gets_row_number_ids(tmp_path: Path) -> None:
    path = tmp_path / "corpus.csv"
    rows = [{"content": r["content"] or "", "topic": r["topic"]} for r in RECORDS]
    pa_csv.write_csv(pa.Table.from_pylist(rows), path)
    table = load_corpus(_config(path))
    # Ids are row numbers in the file, so dropping empty rows does not renumber the rest.
    assert table.column("id").to_pylist() == ["row-000000", "row-000001", "row-000004"]
    assert table.column("label").to_pylist() == ["1", "2", None]


def test_no_label_column_gives_null_labels(tmp_path: Path) -> None:
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": ["a b", "c d"], "label": ["x", "y"]}), path)
    table = load_corpus(DataConfig(corpus=str(path), label_column=None))
    assert table.column("label").to_pylist() == [None, None]
    assert table.schema.field("label").type == pa.string()


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"id": ["a", "a"], "text": ["x", "y"], "label": ["p", "q"]}), path)
    with pytest.raises(CodeunlearnError, match="duplicate"):
        load_corpus(DataConfig(corpus=str(path)))


def test_missing_file_and_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(MissingAssetError, match="no such file"):
        load_corpus(DataConfig(corpus=str(tmp_path / "absent.parquet")))
    text_file = tmp_path / "corpus.txt"
    text_file.write_text("hello\n")
    with pytest.raises(ConfigError, match=r"\.parquet, \.json, \.jsonl, \.csv"):
        load_corpus(DataConfig(corpus=str(text_file)))


def test_unavailable_hub_dataset_says_offline_mode_is_on() -> None:
    with pytest.raises(MissingAssetError) as error:
        load_corpus(DataConfig(corpus="no-such-owner/no-such-dataset-xyz"))
    message = str(error.value)
    assert "neither a local file nor a reachable or cached datasets hub dataset" in message
    assert "HF_HUB_OFFLINE=1" in message


def test_saved_dataset_directory_with_class_labels(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "kind": datasets.ClassLabel(names=["fruit", "tool"])}
    )
    data = {"sentence": ["an apple", "a hammer", "a pear"], "kind": [0, 1, 0]}
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(tmp_path / "saved"))
    table = load_corpus(
        DataConfig(corpus=str(tmp_path / "saved"), text_column="sentence", label_column="kind")
    )
    assert table.column("text").to_pylist() == data["sentence"]
    assert table.column("label").to_pylist() == ["fruit", "tool", "fruit"]  # names, not codes


def _ids_table(n: int) -> pa.Table:
    return pa.table({"id": [f"doc-{i}" for i in range(n)], "text": [f"text {i}" for i in range(n)]})


def test_split_is_a_stable_partition_independent_of_row_order() -> None:
    corpus = _ids_table(5000)
    train, test = split_train_test(corpus, 0.1)
    train_ids, test_ids = set(train.column("id").to_pylist()), set(test.column("id").to_pylist())
    assert not train_ids & test_ids
    assert train_ids | test_ids == set(corpus.column("id").to_pylist())
    assert 0.08 < len(test_ids) / 5000 < 0.12
    reversed_corpus = corpus.take(list(range(4999, -1, -1)))
    _, reversed_test = split_train_test(reversed_corpus, 0.1)
    assert set(reversed_test.column("id").to_pylist()) == test_ids
    # A subset (e.g. another topic's corpus) keeps every example on its side.
    _, subset_test = split_train_test(corpus.slice(0, 1000), 0.1)
    assert set(subset_test.column("id").to_pylist()) == {i for i in test_ids if int(i[4:]) < 1000}
    _, bigger_test = split_train_test(corpus, 0.3)
    assert test_ids < set(bigger_test.column("id").to_pylist())


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan")])
def test_split_rejects_fractions_outside_zero_one(fraction: float) -> None:
    with pytest.raises(ConfigError, match="data.test_fraction"):
        split_train_test(_ids_table(3), fraction)


def test_content_hash_is_ordered_and_unambiguous() -> None:
    assert content_hash(["a", "b"]) == content_hash(iter(["a", "b"]))
    assert len(content_hash(["a"])) == 64
    assert content_hash(["a", "b"]) != content_hash(["b", "a"])
    assert content_hash(["ab", "c"]) != content_hash(["a", "bc"])
    assert content_hash(["a\n", "b"]) != content_hash(["a", "\nb"])
    assert content_hash([]) != content_hash([""])
