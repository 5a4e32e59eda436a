"""Read Debian's `fortunes` package into one Arrow table: one row per fortune, labelled by its file.

Each file under `/usr/share/games/fortunes` is one category (people, computers, food, politics, ...) of
short texts separated by lines holding a single `%`. The categories are the topics of the project's
second offline corpus: ordinary English prose (quotations, jokes, definitions, verse), unlike WordNet's
dictionary glosses.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pyarrow as pa

from codeunlearn.core.errors import MissingAssetError
from codeunlearn.data.labelled_texts import numbered_table, single_label_rows

logger = logging.getLogger(__name__)

# A fortune file is a bare category name; the package puts a `.dat` index and a `.u8` link beside it.
_SKIPPED_SUFFIXES = (".dat", ".u8")
_OVERSTRIKE = re.compile(r".\x08")  # "_\bx" underlines and "x\bx" bolds a character on a teletype
_SPACE = re.compile(r"\s+")


def read_fortunes(directory: str | Path) -> pa.Table:
    """Every fortune of every category file in `directory`, whitespace collapsed to single spaces.

    A text filed under more than one category is dropped from all of them (it would be both a topic's
    text and another topic's retain text); repeats within one category are kept once.

    Args:
        directory: The fortunes directory (Debian: /usr/share/games/fortunes).

    Returns:
        Columns `id` (`<category>-<n>`, n counting from 0 in file order), `text`, `label` (the category).

    Raises:
        MissingAssetError: The directory holds no fortune files.
    """
    root = Path(directory)
    files = sorted(p for p in root.glob("*") if p.is_file() and p.suffix not in _SKIPPED_SUFFIXES)
    if not files:
        raise MissingAssetError(
            f"no fortune files in {root}: install Debian's `fortunes` package (bash scripts/install.sh "
            "--all, or apt-get install fortunes), or set data.corpus to your own labelled file"
        )
    kept, dropped = single_label_rows((text, path.name) for path in files for text in _fortunes_of(path))
    logger.info(
        "fortunes in %s: %s texts in %d categories (%s filed under several, dropped)",
        root,
        f"{len(kept):,}",
        len(files),
        f"{dropped:,}",
    )
    return numbered_table(kept)


def _fortunes_of(path: Path) -> list[str]:
    # The package's files are ASCII or UTF-8; replacing a stray byte keeps one bad fortune from
    # failing the corpus.
    content = path.read_text(encoding="utf-8", errors="replace")
    texts = []
    for block in re.split(r"^%\s*$", content, flags=re.MULTILINE):
        text = _SPACE.sub(" ", _OVERSTRIKE.sub("", block)).strip()
        if text:
            texts.append(text)
    return texts
