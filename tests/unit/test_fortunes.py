"""The fortunes corpus: Debian's fortune files read into labelled rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeunlearn.core.config import DataConfig
from codeunlearn.core.data_config import FORTUNES_DIR
from codeunlearn.core.errors import MissingAssetError
from codeunlearn.core.fingerprint import data_fingerprint
from codeunlearn.data.corpus import load_corpus
from codeunlearn.data.fortunes import read_fortunes


def _write(directory: Path, name: str, fortunes: list[str]) -> None:
    (directory / name).write_text("\n%\n".join(fortunes) + "\n%\n")
    (directory / f"{name}.dat").write_bytes(b"\x00\x02binary index")


def test_one_row_per_fortune_labelled_by_its_file(tmp_path: Path) -> None:
    _write(tmp_path, "food", ["Eat\n\tyour  greens.\n\t\t-- Mother", "Pie is _\bgood."])
    _write(tmp_path, "work", ["Work expands to fill the time."])
    table = read_fortunes(tmp_path)
    assert table.to_pylist() == [
        {"id": "food-00000", "text": "Eat your greens. -- Mother", "label": "food"},
        {"id": "food-00001", "text": "Pie is good.", "label": "food"},
        {"id": "work-00000", "text": "Work expands to fill the time.", "label": "work"},
    ]


def test_a_text_filed_under_two_categories_is_dropped_from_both(tmp_path: Path) -> None:
    _write(tmp_path, "art", ["Shared wisdom.", "Art is long.", "Art is long."])
    _write(tmp_path, "wisdom", ["Shared wisdom.", "Know thyself."])
    table = read_fortunes(tmp_path)
    assert table.column("text").to_pylist() == ["Art is long.", "Know thyself."]
    assert table.column("id").to_pylist() == ["art-00000", "wisdom-00000"]


def test_an_empty_directory_names_the_package_to_install(tmp_path: Path) -> None:
    with pytest.raises(MissingAssetError, match="apt-get install fortunes"):
        read_fortunes(tmp_path)


@pytest.mark.skipif(not Path(FORTUNES_DIR, "food").exists(), reason="Debian's fortunes not installed")
def test_the_installed_package_loads_as_the_fortunes_corpus() -> None:
    config = DataConfig(corpus="fortunes")
    table = load_corpus(config)
    labels = table.column("label").to_pylist()
    assert table.num_rows > 10_000
    assert {"food", "people", "computers", "politics"} <= set(labels)
    assert sum(1 for label in set(labels) if labels.count(label) >= 150) >= 20
    assert data_fingerprint(config) != data_fingerprint(DataConfig(corpus="wordnet"))
