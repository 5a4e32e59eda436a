"""Read the GNU Collaborative International Dictionary of English (GCIDE) into one labelled table.

Debian's `dict-gcide` package installs the dictionary as a dictd database: a gzip-compatible
`gcide.dict.dz` of plain-text entries. Most of it is Webster's Revised Unabridged Dictionary of 1913,
whose senses carry a field label when they belong to a subject: `(Zool.)`, `(Bot.)`, `(Law)`,
`(Naut.)`, `(Her.)`, ... Those labels are the topics: one row per 1913 sense with exactly one field
label, its text `<headword>: <definition>`, the label left out of the text (the way WordNet glosses
leave out their lexicographer file). The senses the dictionary took from WordNet are skipped, so
this corpus shares no text with the default one.

An entry looks like this (each sense ends with a line naming its source):

    Abactor \\Ab*ac"tor\\ (-t[~e]r), n. [L., fr. abigere to drive
       away; ab + agere to drive.] (Law)
       One who steals and drives away cattle or beasts by herds or
       droves. [Obs.]
       [1913 Webster]

The head runs until its etymology's brackets close; a field label at its end applies to a sense
that does not name its own. Notes, synonym lists, phrases (`{To be taken aback}`) and run-on
derivatives (`-- Ab*ac"tor*ly`) are not definitions and are skipped.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from codeunlearn.core.errors import MissingAssetError
from codeunlearn.data.labelled_texts import single_label_rows

logger = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("label", pa.string()), ("headword", pa.string())]
)
MIN_WORDS = 3  # a definition of fewer words is a cross-reference ("See Abacus."), not a sense

_SOURCE_LINE = re.compile(r"^\s*\[([^\]]*(?:Webster|WordNet|PJC|Century)[^\]]*)\]\s*$")
_SENSE_NUMBER = re.compile(r"^\s*(?:\d+\.|\([a-z]\))\s*")
_LABEL = r"\(([A-Z][A-Za-z\[\]\"]*\.?(?: ?& ?[A-Z][A-Za-z\[\]\"]*\.?)*)\)\s*"  # (Zool.), (Anat. & Zool.)
_FIELD_LABEL = re.compile("^" + _LABEL)  # a sense's own label, before its definition
_HEAD_LABEL = re.compile(_LABEL + "$")  # the entry's label, ending its head
_SKIPPED_STARTS = ("Note:", "Syn:", "Syn.", "{", "--", "Usage:", "Var.")
_QUOTATION = re.compile(r"\s\"")
_CITATION = re.compile(r"\s--\s?[A-Z][^;]*$")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_BRACES = re.compile(r"[{}]")
_SPACES = re.compile(r"\s+")
_INNER_LABEL = re.compile(r"\([A-Z][A-Za-z]*\.\)")  # a run-on sense of another field inside the text
# The dictionary marks a diaeresis as ["o]: Zo["o]l. is Zool., A["e]ronautics Aeronautics.
_DIAERESIS = re.compile(r'\["(\w)\]')


@dataclass(frozen=True)
class Sense:
    """One labelled definition of the dictionary."""

    headword: str
    label: str
    definition: str


def read_gcide(path: str | Path) -> pa.Table:
    """Every single-label 1913 sense of the GCIDE database at `path`.

    A text found under more than one label is dropped from all of them (it would be one topic's text
    and another's retain text); repeats under one label are kept once.

    Args:
        path: The dictd database (Debian: /usr/share/dictd/gcide.dict.dz; a plain-text copy works too).

    Returns:
        Columns `id` (`<label>-<first 12 hex digits of the text's sha256>`), `text`, `label` and
        `headword`, in dictionary order.

    Raises:
        MissingAssetError: The file does not exist.
    """
    source = Path(path)
    if not source.is_file():
        raise MissingAssetError(
            f"no GCIDE database at {source}: install Debian's `dict-gcide` package (bash scripts/install.sh "
            "--all, or apt-get install dict-gcide), or set data.corpus to your own labelled file"
        )
    opener = gzip.open if source.suffix in (".dz", ".gz") else open
    with opener(source, "rt", encoding="utf-8", errors="replace") as handle:
        content = handle.read()
    kept, dropped = single_label_rows(
        (f"{sense.headword}: {sense.definition}", sense.label, sense.headword)
        for sense in iter_senses(content)
    )
    logger.info(
        "GCIDE at %s: %s labelled senses under %d field labels (%s under several, dropped)",
        source,
        f"{len(kept):,}",
        len({label for _, label, _ in kept}),
        f"{dropped:,}",
    )
    # An id from the text itself keeps every sense on its side of the train/test split when a new
    # release of the dictionary (or of this parser) adds or drops other senses.
    ids = [f"{label}-{hashlib.sha256(text.encode()).hexdigest()[:12]}" for text, label, _ in kept]
    columns = [ids, [row[0] for row in kept], [row[1] for row in kept], [row[2] for row in kept]]
    return pa.table(columns, schema=SCHEMA)


def iter_senses(content: str) -> Iterator[Sense]:
    """The labelled 1913 senses of a dictionary's text, in order."""
    for entry in re.split(r"\n\s*\n(?=\S)", content):
        yield from _entry_senses(entry)


def _entry_senses(entry: str) -> Iterator[Sense]:
    lines = entry.strip("\n").split("\n")
    if not lines or lines[0].startswith(("00-database", " ")) or "\\" not in lines[0]:
        return
    headword = lines[0].split("\\", 1)[0].strip()
    head_end = _head_end(lines)
    head_label = _HEAD_LABEL.search(lines[head_end])
    body = lines[head_end + 1 :]
    for chunk, source in _chunks(body):
        if "Webster" not in source or "WordNet" in source:
            continue  # WordNet's senses (the default corpus's text) and the editors' later additions
        sense = _sense(headword, chunk, head_label.group(1) if head_label else None)
        if sense is not None:
            yield sense


def _head_end(lines: list[str]) -> int:
    """Index of the head's last line: where the square brackets opened on the first line close."""
    depth = 0
    for index, line in enumerate(lines):
        depth += line.count("[") - line.count("]")
        if depth <= 0:
            return index
    return 0


def _chunks(body: list[str]) -> Iterator[tuple[str, str]]:
    """(text, source) for each run of lines that a source line such as `[1913 Webster]` ends."""
    pending: list[str] = []
    for line in body:
        source = _SOURCE_LINE.match(line)
        if source and pending:
            yield " ".join(part.strip() for part in pending), source.group(1)
            pending = []
        elif line.strip() or pending and not _SENSE_NUMBER.match(pending[0]):
            pending.append(line)


def _sense(headword: str, chunk: str, head_label: str | None) -> Sense | None:
    text = _SENSE_NUMBER.sub("", chunk, count=1).strip()
    if text.startswith(_SKIPPED_STARTS):
        return None
    own = _FIELD_LABEL.match(text)
    label = own.group(1) if own else head_label
    if own:
        text = text[own.end() :]
    if label is None or "&" in label:
        return None
    definition = _clean(text)
    if len(definition.split()) < MIN_WORDS or _INNER_LABEL.search(definition):
        return None
    return Sense(headword=_clean(headword), label=_DIAERESIS.sub(r"\1", label), definition=definition)


def _clean(text: str) -> str:
    quotation = _QUOTATION.search(text)
    if quotation:
        text = text[: quotation.start()]
    text = _BRACKETS.sub("", _BRACES.sub("", _DIAERESIS.sub(r"\1", text)))
    text = _CITATION.sub("", _SPACES.sub(" ", text).strip())
    return text.strip().rstrip(";:,").strip()
