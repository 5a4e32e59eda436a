"""Load the corpus as one Arrow table (`id`, `text`, `label`, ...) and split it train/test by id hash."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from codeunlearn.core.config import DataConfig
from codeunlearn.core.data_config import (
    FORTUNES_CORPUS,
    FORTUNES_DIR,
    GCIDE_CORPUS,
    GCIDE_PATH,
    PYTHON_DOCS_CORPUS,
    PYTHON_DOCS_DIR,
)
from codeunlearn.core.errors import CodeunlearnError, ConfigError, MissingAssetError
from codeunlearn.data.fortunes import read_fortunes
from codeunlearn.data.gcide import read_gcide
from codeunlearn.data.python_docs import read_python_docs
from codeunlearn.data.wordnet import read_wordnet

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".parquet", ".json", ".jsonl", ".csv")
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def load_corpus(config: DataConfig) -> pa.Table:
    """Load the configured corpus with columns `id` (unique string), `text` and `label` first.

    `data.text_column` and `data.label_column` apply to files and hub datasets; WordNet already
    names its columns `text` and `label` (the lexname) and keeps its other columns, `fortunes`
    (Debian's fortune files) labels each text by its category file, `gcide` each 1913 dictionary
    sense by its field label, and `python-docs` each paragraph of the Python library reference by
    its page.

    Args:
        config: The data section of the run configuration.

    Returns:
        The corpus, rows with empty or null text dropped, `label` cast to string (null when
        `data.label_column` is None).

    Raises:
        ConfigError: A missing column, duplicate ids, or an unsupported file type.
        MissingAssetError: WordNet, the file, or the hub dataset cannot be found.
    """
    if config.corpus == "wordnet":
        table = read_wordnet(config.wordnet_dir, config.wordnet_pos, config.include_examples)
        source = f"WordNet at {config.wordnet_dir}"
    elif config.corpus == FORTUNES_CORPUS:
        table = read_fortunes(FORTUNES_DIR)
        source = f"fortunes at {FORTUNES_DIR}"
    elif config.corpus == GCIDE_CORPUS:
        table = read_gcide(GCIDE_PATH)
        source = f"GCIDE at {GCIDE_PATH}"
    elif config.corpus == PYTHON_DOCS_CORPUS:
        table = read_python_docs(PYTHON_DOCS_DIR)
        source = f"the Python library reference at {PYTHON_DOCS_DIR}"
    else:
        table, source = _read_source(config.corpus, config.hub_split, config.label_column)
        table = _standardise_columns(table, config, source)
    table = _ensure_ids(table, source)
    table = _drop_empty_text(table, source)
    core = ["id", "text", "label"]
    table = table.select(core + [name for name in table.column_names if name not in core])
    logger.info("corpus %s: %s rows", source, f"{table.num_rows:,}")
    return table


def read_table_file(path: Path) -> pa.Table:
    """Read a .parquet, .csv, .jsonl or .json (JSON lines or a JSON array of records) file.

    Args:
        path: The file to read.

    Returns:
        Its rows as a table.

    Raises:
        ConfigError: The suffix is not supported or the file cannot be parsed.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            return pa_csv.read_csv(path)
        if suffix == ".jsonl":
            return pa_json.read_json(path)
        if suffix == ".json":
            return _read_json(path)
    except (pa.ArrowInvalid, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"cannot read {path} as {suffix[1:]}: {error}; fix the file or convert it"
        ) from error
    raise ConfigError(
        f"{path} has suffix {suffix!r}, which is not a supported table format: "
        f"use one of {', '.join(TABLE_SUFFIXES)}"
    )


def split_train_test(corpus: pa.Table, test_fraction: float) -> tuple[pa.Table, pa.Table]:
    """Partition rows into train and test by a stable hash of `id`.

    The side of a row depends only on its id, never on row order, topic or seed, so an example is
    on the same side in every run and for every topic.

    Args:
        corpus: A table with an `id` column.
        test_fraction: Expected fraction of rows on the test side, strictly between 0 and 1.

    Returns:
        (train, test), each keeping the corpus's row order.

    Raises:
        ConfigError: `test_fraction` is outside (0, 1).
    """
    if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
        raise ConfigError(
            f"data.test_fraction={test_fraction!r}: it must be a number strictly between 0 and 1 (e.g. 0.1)"
        )
    is_test = np.fromiter(
        (id_fraction(str(row_id)) < test_fraction for row_id in corpus.column("id").to_pylist()),
        dtype=bool,
        count=corpus.num_rows,
    )
    mask = pa.array(is_test, type=pa.bool_())
    return corpus.filter(pc.invert(mask)), corpus.filter(mask)


def id_fraction(row_id: str) -> float:
    """A number in [0, 1) fixed by the id: the first 8 bytes of its SHA-1 over 2**64."""
    digest = hashlib.sha1(row_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def content_hash(texts: Iterable[str]) -> str:
    """SHA-256 hex digest of texts in order; each is length-prefixed so no two lists collide.

    Args:
        texts: The texts, in order.

    Returns:
        64 hexadecimal characters.
    """
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def _read_source(corpus: str, hub_split: str, label_column: str | None) -> tuple[pa.Table, str]:
    path = Path(corpus).expanduser()
    if path.is_file():
        return read_table_file(path), str(path)
    if path.is_dir():
        return _read_saved_dataset(path, hub_split, label_column), str(path)
    if path.suffix.lower() in TABLE_SUFFIXES or corpus.startswith((".", "/", "~")):
        raise MissingAssetError(
            f"data.corpus={corpus!r}: no such file ({path.resolve()}); fix the path, or set data.corpus "
            "to 'wordnet' or a datasets hub id"
        )
    return _load_hub_dataset(corpus, hub_split, label_column), f"hub dataset {corpus}"


def _read_json(path: Path) -> pa.Table:
    with path.open(encoding="utf-8") as handle:
        first = handle.read(4096).lstrip()[:1]
    if first != "[":
        return pa_json.read_json(path)  # JSON lines
    records = json.loads(path.read_text(encoding="utf-8"))
    if not all(isinstance(record, dict) for record in records):
        raise ConfigError(f"{path} is a JSON array, but not of objects: write one object per record")
    return pa.Table.from_pylist(records)


def _read_saved_dataset(path: Path, split: str, label_column: str | None) -> pa.Table:
    import datasets  # heavy: imported only when a saved dataset is used

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as error:
        raise MissingAssetError(
            f"data.corpus={str(path)!r} is a directory but not one saved by datasets `save_to_disk`: "
            "point data.corpus at a table file or a saved dataset"
        ) from error
    return _dataset_to_table(_pick_split(loaded, split, str(path)), label_column)


def _load_hub_dataset(name: str, split: str, label_column: str | None) -> pa.Table:
    import datasets  # heavy: imported only when a hub dataset is used

    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as error:  # the hub client raises many unrelated types for "not available"
        offline = [f"{var}={os.environ[var]}" for var in _OFFLINE_VARIABLES if _truthy(os.environ.get(var))]
        note = f"; offline mode is on ({', '.join(offline)}), so only cached datasets load" if offline else ""
        raise MissingAssetError(
            f"data.corpus={name!r} is neither a local file nor a reachable or cached datasets hub dataset "
            f"(split {split!r}): {type(error).__name__}: {error}{note}. Set data.corpus to a "
            f".parquet/.json/.jsonl/.csv file, 'wordnet', or a hub id available on this machine"
        ) from error
    return _dataset_to_table(dataset, label_column)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _pick_split(loaded: Any, split: str, source: str) -> Any:
    if not hasattr(loaded, "keys"):
        return loaded  # a single Dataset
    if split not in loaded:
        raise ConfigError(
            f"{source} has no split {split!r}; its splits are: {', '.join(loaded.keys())}. Set data.hub_split"
        )
    return loaded[split]


def _dataset_to_table(dataset: Any, label_column: str | None) -> pa.Table:
    table = dataset.with_format("arrow")[:]
    feature = dataset.features.get(label_column) if label_column else None
    names = getattr(feature, "names", None)  # a ClassLabel: store its names, not its integer codes
    if names and label_column in table.column_names:
        codes = table.column(label_column).to_pylist()
        named = [names[code] if code is not None and 0 <= code < len(names) else None for code in codes]
        index = table.column_names.index(label_column)
        table = table.set_column(index, label_column, pa.array(named, type=pa.string()))
    return table


def _standardise_columns(table: pa.Table, config: DataConfig, source: str) -> pa.Table:
    text = _take_column(table, config.text_column, source, "data.text_column")
    text = pc.cast(text, pa.string()) if text.type != pa.string() else text
    default_missing = (
        config.label_column == DataConfig.label_column and config.label_column not in table.column_names
    )
    if config.label_column is None or default_missing:
        # Labels are optional: only an explicitly named label column must exist.
        label = pa.nulls(table.num_rows, pa.string())
    else:
        label = _take_column(table, config.label_column, source, "data.label_column")
        label = label if label.type == pa.string() else pc.cast(label, pa.string())
    replaced = {config.text_column, config.label_column, "text", "label"}
    for name in ("text", "label"):
        if name in table.column_names and name not in (config.text_column, config.label_column):
            logger.warning("%s: column %r is replaced by data.%s_column", source, name, name)
    rest = [name for name in table.column_names if name not in replaced]
    return pa.table([text, label, *(table.column(n) for n in rest)], names=["text", "label", *rest])


def _take_column(table: pa.Table, name: str, source: str, key: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise ConfigError(
            f"{source} has no column {name!r}; its columns are: {', '.join(table.column_names)}. Set {key}"
        )
    return table.column(name)


def _ensure_ids(table: pa.Table, source: str) -> pa.Table:
    if "id" in table.column_names:
        ids = table.column("id")
        ids = ids if ids.type == pa.string() else pc.cast(ids, pa.string())
        if ids.null_count:
            raise ConfigError(f"{source}: {ids.null_count} rows have a null id; give every row an id")
        if pc.count_distinct(ids).as_py() != table.num_rows:
            raise CodeunlearnError(
                f"{source}: the id column has duplicate values; make ids unique or drop the column "
                "(ids are then made from row numbers)"
            )
    else:
        width = max(6, len(str(table.num_rows)))
        ids = pa.array([f"row-{i:0{width}d}" for i in range(table.num_rows)], type=pa.string())
    rest = [name for name in table.column_names if name != "id"]
    return pa.table([ids, *(table.column(n) for n in rest)], names=["id", *rest])


def _drop_empty_text(table: pa.Table, source: str) -> pa.Table:
    text = table.column("text")
    keep = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), False)
    dropped = table.num_rows - pc.sum(keep).as_py() if table.num_rows else 0
    if dropped:
        logger.warning("%s: dropped %s rows with empty or null text", source, f"{dropped:,}")
    return table.filter(keep)
