"""Read the Python standard library reference into one labelled table: one row per paragraph, labelled
by the page it is on.

Debian's `python3-doc` package installs the Python documentation as HTML under
`/usr/share/doc/python3/html`; `library/` holds the library reference, one page per module or
chapter (`re`, `os`, `sqlite3`, `asyncio-eventloop`, ...). Each page is a topic: ordinary English
prose about one subject, in a register (technical documentation) the base model has read before, and
with vocabulary of its own (a module's functions, options and concepts). Only `<p>` paragraphs of a
page's main body are read: not its code examples, tables of contents, navigation or the labels of
notes ("See also"), and not a paragraph under MIN_WORDS words (an "Availability: Unix." line).
"""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa

from codeunlearn.core.errors import MissingAssetError
from codeunlearn.data.labelled_texts import numbered_table, single_label_rows

logger = logging.getLogger(__name__)

MIN_WORDS = 6  # a shorter paragraph is a note's label or a one-line availability remark, not prose
_SPACE = re.compile(r"\s+")


class _ParagraphParser(HTMLParser):
    """Collects the text of each `<p>` inside the page's `<div role="main">`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._div_depth = 0  # open <div>s, counting from the main body's (0: outside it)
        self._run: list[str] | None = None  # text of the open paragraph

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "div" and (self._div_depth or ("role", "main") in attrs):
            self._div_depth += 1
        elif tag == "p" and self._div_depth and self._run is None:
            self._run = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._div_depth:
            self._div_depth -= 1
        elif tag == "p" and self._run is not None:
            text = _SPACE.sub(" ", "".join(self._run)).strip()
            if len(text.split()) >= MIN_WORDS:
                self.paragraphs.append(text)
            self._run = None

    def handle_data(self, data: str) -> None:
        if self._run is not None:
            self._run.append(data)


def read_python_docs(html_dir: str | Path) -> pa.Table:
    """Every prose paragraph of every page of the library reference under `html_dir`.

    A paragraph found on more than one page is dropped from all of them (it would be both a topic's
    text and another topic's retain text); repeats within one page are kept once.

    Args:
        html_dir: The documentation's HTML root (Debian: /usr/share/doc/python3/html), whose
            `library/` directory holds the reference's pages.

    Returns:
        Columns `id` (`<page>-<n>`, n counting from 0 in page order), `text`, `label` (the page's file
        name without `.html`).

    Raises:
        MissingAssetError: There is no library reference under `html_dir`.
    """
    library = Path(html_dir) / "library"
    pages = sorted(library.glob("*.html"))
    if not pages:
        raise MissingAssetError(
            f"no Python library reference in {library}: install Debian's `python3-doc` package (bash "
            "scripts/install.sh --all, or apt-get install python3-doc), or set data.corpus to your own "
            "labelled file"
        )
    kept, dropped = single_label_rows((text, page.stem) for page in pages for text in _paragraphs_of(page))
    logger.info(
        "Python library reference in %s: %s paragraphs on %d pages (%s on several pages, dropped)",
        library,
        f"{len(kept):,}",
        len(pages),
        f"{dropped:,}",
    )
    return numbered_table(kept)


def _paragraphs_of(page: Path) -> list[str]:
    parser = _ParagraphParser()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return parser.paragraphs
