"""Read the Princeton WordNet 3.0 `data.<pos>` files into one Arrow table, one row per synset.

The format is documented in wndb(5WN): each data line is
`offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...] [frames...] | gloss`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from codeunlearn.core.errors import ConfigError, MissingAssetError

logger = logging.getLogger(__name__)

# lexnames(5WN): the lexicographer file names, indexed by the two-digit lex_filenum of each data line.
LEXNAMES: tuple[str, ...] = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)

# Part-of-speech name -> the letter that prefixes synset ids (the file's own letter, so ids are unique
# per file: adjective satellites `s` share data.adj and its offsets with head adjectives `a`).
POS_LETTERS: dict[str, str] = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("offset", pa.int64()),
        ("pos", pa.string()),
        ("lexname", pa.string()),
        ("lemmas", pa.list_(pa.string())),
        ("gloss", pa.string()),
        ("text", pa.string()),
        ("label", pa.string()),
    ]
)

# Adjective lemmas may end in a syntactic marker: (a) prenominal, (p) predicate, (ip) postnominal.
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")
# Usage examples follow the definition as `; "example"` (a few glosses use `: "example"`).
_EXAMPLE_START = re.compile(r'[;:]\s*"')


def find_wordnet_dir(path: str | Path) -> Path:
    """Return the WordNet directory after checking that it holds `data.noun`.

    Args:
        path: Directory expected to hold the WordNet 3.0 database files.

    Returns:
        The directory as a Path.

    Raises:
        MissingAssetError: `data.noun` is not in that directory.
    """
    directory = Path(path).expanduser()
    if not (directory / "data.noun").is_file():
        raise MissingAssetError(
            f"WordNet 3.0 not found at {directory} (no data.noun): install it with "
            "`apt-get install --no-install-recommends wordnet-base`, or set data.wordnet_dir"
        )
    return directory


def read_wordnet(
    wordnet_dir: str | Path, pos: Sequence[str] = ("noun",), include_examples: bool = False
) -> pa.Table:
    """Parse the WordNet data files of the given parts of speech into one table of synsets.

    Args:
        wordnet_dir: Directory holding `data.noun`, `data.verb`, `data.adj`, `data.adv`.
        pos: Parts of speech to read, any of noun, verb, adj, adv.
        include_examples: Keep the quoted usage examples in `gloss` (and so in `text`).

    Returns:
        A table with columns id, offset, pos, lexname, lemmas, gloss, text, label (see SCHEMA);
        `text` is "<first lemma>: <gloss>" and `label` is the lexname.

    Raises:
        ConfigError: An unknown part of speech.
        MissingAssetError: The directory or one of the needed data files is missing.
    """
    directory = find_wordnet_dir(wordnet_dir)
    names = _check_pos(pos)
    rows: list[tuple[str, int, str, str, list[str], str]] = []
    for name in names:
        path = directory / f"data.{name}"
        if not path.is_file():
            raise MissingAssetError(
                f"WordNet file {path} is missing for data.wordnet_pos={name!r}: reinstall "
                "`wordnet-base`, or drop that part of speech from data.wordnet_pos"
            )
        rows.extend(_read_data_file(path, name, include_examples))
        logger.info("read %s synsets so far (through %s)", f"{len(rows):,}", path)
    return _rows_to_table(rows)


def _check_pos(pos: Sequence[str] | str) -> list[str]:
    # A bare string would otherwise be iterated letter by letter.
    names = [pos] if isinstance(pos, str) else list(pos)
    unknown = [name for name in names if name not in POS_LETTERS]
    if unknown or not names:
        raise ConfigError(
            f"data.wordnet_pos={tuple(names)!r} has unknown parts of speech {unknown}: "
            f"use one or more of {', '.join(POS_LETTERS)}"
        )
    return list(dict.fromkeys(names))  # drop repeats, keep order


def _read_data_file(
    path: Path, pos: str, include_examples: bool
) -> list[tuple[str, int, str, str, list[str], str]]:
    letter = POS_LETTERS[pos]
    rows = []
    # WordNet 3.0 data files are ASCII; latin-1 never fails to decode whatever a variant holds.
    with path.open(encoding="latin-1") as handle:
        for line in handle:
            if line.startswith("  ") or not line.strip():
                continue  # license header lines start with two spaces
            offset, lexname, lemmas, gloss = _parse_line(line, include_examples)
            rows.append((f"{letter}{offset:08d}", offset, pos, lexname, lemmas, gloss))
    return rows


def _parse_line(line: str, include_examples: bool) -> tuple[int, str, list[str], str]:
    head, _, gloss = line.partition("|")
    fields = head.split()
    lex_filenum = int(fields[1])
    word_count = int(fields[3], 16)  # w_cnt is two hexadecimal digits
    lemmas = [_ADJ_MARKER.sub("", word).replace("_", " ") for word in fields[4 : 4 + 2 * word_count : 2]]
    gloss = gloss.strip()
    if not include_examples:
        gloss = _definition(gloss)
    return int(fields[0]), LEXNAMES[lex_filenum], lemmas, gloss


def _definition(gloss: str) -> str:
    match = _EXAMPLE_START.search(gloss)
    definition = gloss[: match.start()] if match else gloss
    return definition.strip().rstrip(";").strip()


def _rows_to_table(rows: list[tuple[str, int, str, str, list[str], str]]) -> pa.Table:
    if not rows:
        return SCHEMA.empty_table()
    ids, offsets, pos, lexnames, lemmas, glosses = (list(column) for column in zip(*rows, strict=True))
    texts = [f"{names[0]}: {gloss}" for names, gloss in zip(lemmas, glosses, strict=True)]
    return pa.table([ids, offsets, pos, lexnames, lemmas, glosses, texts, lexnames], schema=SCHEMA)
