"""English-French paragraph pairs from Debian's manuals, read from their installed HTML.

Both manuals are translated from gettext catalogues, one message per paragraph, so the French HTML
keeps the English structure: the same files, the same section anchors, the same paragraphs in the
same order. Pairs are therefore made per section (keyed by the anchor of its heading) and only where
both languages have the same number of blocks there; a section whose counts differ is skipped whole
rather than guessed at. `<pre>` blocks count for that check but are never pairs (code, not
translation), nor is any paragraph left identical in both languages (a command line, an untranslated
message).

- `debian-reference` (Debian packages `debian-reference-en`, `debian-reference-fr`):
  /usr/share/debian-reference/<chapter>.{en,fr}.html, one file per chapter, `<p>` paragraphs.
- `debian-handbook` (Debian package `debian-handbook`): /usr/share/doc/debian-handbook/html/
  {en-US,fr-FR}/<page>.html, one file per section, `<div class="para">` paragraphs; a page's chapter
  is the page its `<link rel="up">` names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa

_SPACES = re.compile(r"\s+")
_LETTERS = re.compile(r"[^\W\d_]")
# Containers whose text is navigation or repeated tables of contents, not prose.
_SKIPPED_CLASSES = frozenset({"toc", "navheader", "navfooter", "docnav", "list-of-tables", "list-of-figures"})
_SKIPPED_IDS = frozenset({"banner", "title"})
_VOID_TAGS = frozenset({"area", "base", "br", "col", "hr", "img", "input", "link", "meta", "wbr"})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
MIN_LETTERS = 3  # a pair whose English side has fewer letters is a number or a symbol, not prose


@dataclass(frozen=True)
class Block:
    """One paragraph-level run of text: `section` is the anchor id of the heading above it."""

    section: str
    text: str  # whitespace collapsed to single spaces
    is_code: bool  # a <pre> block: counted for alignment, never paired


@dataclass(frozen=True)
class ParsedPage:
    """What one HTML page holds for alignment."""

    blocks: list[Block]
    up_link: str | None  # href of `<link rel="up">`: the handbook's chapter page
    first_section: str  # anchor id of the page's first heading: the reference's chapter id


@dataclass(frozen=True)
class ManualPage:
    """One HTML page of a manual in both languages."""

    manual: str  # "reference" or "handbook"
    page: str  # file name without the language and .html
    source: Path
    target: Path


class _BlockParser(HTMLParser):
    """Collects `Block`s from DocBook HTML: `<p>`, `<div class="para">` and `<pre>` elements.

    A block nested in another (a `<pre>` inside a handbook para) splits its parent: the parent's text
    before and after it becomes two blocks, so the order of runs is the document's order.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.up_link: str | None = None
        self.first_section = ""
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, is_skipped, is_block) per open element
        self._runs: list[list[str]] = []  # text of each open block since its last split
        self._codes: list[bool] = []
        self._section = ""
        self._heading_depth = 0
        self._heading_has_id = False
        self._n_headings = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "link" and found.get("rel") == "up":
            self.up_link = found.get("href")
        if tag in _HEADINGS:
            self._start_heading()
        if self._heading_depth and not self._heading_has_id and found.get("id"):
            # The heading's own id or its first anchor's (DocBook writes `<h2><a id="..."/>`).
            self._section, self._heading_has_id = str(found["id"]), True
            self.first_section = self.first_section or self._section
        if tag in _VOID_TAGS:
            return
        classes = set((found.get("class") or "").split())
        is_skipped = bool(classes & _SKIPPED_CLASSES) or found.get("id") in _SKIPPED_IDS
        is_block = tag in ("p", "pre") or (tag == "div" and "para" in classes)
        self._stack.append((tag, is_skipped, is_block))
        if is_block:
            self._flush()
            self._runs.append([])
            self._codes.append(tag == "pre")

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID_TAGS or all(open_tag != tag for open_tag, _, _ in self._stack):
            return  # a stray end tag: nothing of ours to close
        while self._stack:
            open_tag, _, is_block = self._stack.pop()
            if open_tag in _HEADINGS:
                self._heading_depth -= 1
            if is_block:
                self._flush()
                self._runs.pop()
                self._codes.pop()
            if open_tag == tag:
                return

    def handle_data(self, data: str) -> None:
        if self._runs and not self._heading_depth and not any(skip for _, skip, _ in self._stack):
            self._runs[-1].append(data)

    def _start_heading(self) -> None:
        self._heading_depth += 1
        if self._heading_depth == 1:
            self._n_headings += 1
            # A heading without an anchor still starts a section; its number is the same in both languages.
            self._section, self._heading_has_id = f"heading-{self._n_headings}", False

    def _flush(self) -> None:
        """End the innermost open block's current run of text, keeping it as a block if not blank."""
        if not self._runs:
            return
        text = _SPACES.sub(" ", "".join(self._runs[-1])).strip()
        if text:
            self.blocks.append(Block(self._section, text, self._codes[-1]))
        self._runs[-1] = []


def read_blocks(html: str) -> ParsedPage:
    """The paragraph-level blocks of one DocBook HTML page, in document order, and its links.

    Args:
        html: The page's HTML text.

    Returns:
        The blocks (navigation and tables of contents left out), the href of the page's
        `<link rel="up">` (None when it has none) and the anchor id of its first heading.
    """
    parser = _BlockParser()
    parser.feed(html)
    parser.close()
    return ParsedPage(parser.blocks, parser.up_link, parser.first_section)


def align_blocks(source: list[Block], target: list[Block]) -> tuple[list[tuple[Block, Block]], list[str]]:
    """Pair the blocks of two translations of one page, section by section.

    Args:
        source: The English page's blocks.
        target: The French page's blocks.

    Returns:
        The pairs that are translations (see `is_translation`), in source order, and the ids of the
        sections skipped because the two languages have different numbers of blocks there (or a
        section exists in one language only).
    """
    source_sections, target_sections = _by_section(source), _by_section(target)
    pairs: list[tuple[Block, Block]] = []
    skipped = sorted(set(target_sections) - set(source_sections))
    for section, blocks in source_sections.items():
        others = target_sections.get(section, [])
        if len(others) != len(blocks):
            skipped.append(section)
            continue
        pairs.extend((s, t) for s, t in zip(blocks, others, strict=True) if is_translation(s, t))
    return pairs, skipped


def is_translation(source: Block, target: Block) -> bool:
    """Whether an aligned pair is prose worth keeping: not code, translated, and not a bare number."""
    if source.is_code or target.is_code or source.text == target.text:
        return False
    return len(_LETTERS.findall(source.text)) >= MIN_LETTERS


def reference_pages(reference_dir: Path) -> list[ManualPage]:
    """The debian-reference pages installed in both languages (`ch01.en.html` and `ch01.fr.html`, ...)."""
    pages = []
    for source in sorted(reference_dir.glob("*.en.html")):
        target = source.with_name(source.name.replace(".en.html", ".fr.html"))
        if target.is_file():
            pages.append(ManualPage("reference", source.name.removesuffix(".en.html"), source, target))
    return pages


def handbook_pages(handbook_dir: Path) -> list[ManualPage]:
    """The debian-handbook pages present in both `en-US/` and `fr-FR/` under `handbook_dir`."""
    pages = []
    for source in sorted((handbook_dir / "en-US").glob("*.html")):
        target = handbook_dir / "fr-FR" / source.name
        if target.is_file():
            pages.append(ManualPage("handbook", source.name.removesuffix(".html"), source, target))
    return pages


def read_manual_pairs(pages: list[ManualPage]) -> tuple[pa.Table, list[str]]:
    """The aligned English-French pairs of `pages`, labelled `<manual>.<chapter>`.

    Args:
        pages: Pages of either manual, from `reference_pages` and `handbook_pages`.

    Returns:
        A table of `id` (`<manual>.<page>.<section>.<n>`), `text` (English), `target` (French) and
        `label` (`reference.debian_package_management`, `handbook.apt`, ...), and the
        `<manual>.<page>#<section>` names of the sections skipped for mismatched block counts.
    """
    rows: dict[str, list[str]] = {"id": [], "text": [], "target": [], "label": []}
    skipped: list[str] = []
    seen: set[tuple[str, str]] = set()  # a repeated pair ("For example, try the following") is kept once
    for page in pages:
        source = read_blocks(page.source.read_text(encoding="utf-8"))
        target = read_blocks(page.target.read_text(encoding="utf-8"))
        pairs, page_skipped = align_blocks(source.blocks, target.blocks)
        skipped.extend(f"{page.manual}.{page.page}#{section}" for section in page_skipped)
        label = f"{page.manual}.{chapter_of(page, source)}"
        counts: dict[str, int] = {}
        for en, fr in pairs:
            counts[en.section] = counts.get(en.section, 0) + 1
            if (en.text, fr.text) in seen:
                continue
            seen.add((en.text, fr.text))
            rows["id"].append(f"{page.manual}.{page.page}.{en.section}.{counts[en.section]}")
            rows["text"].append(en.text)
            rows["target"].append(fr.text)
            rows["label"].append(label)
    return pa.table(rows), skipped


def chapter_of(page: ManualPage, parsed: ParsedPage) -> str:
    """A page's chapter: the handbook page its `rel="up"` link names (unless that is the book's index,
    then the page is a chapter itself); for the reference, one page per chapter, its title anchor."""
    if page.page == "index":
        return "index"  # the title page: its heading anchor is a generated one (`idm1`)
    if page.manual == "handbook":
        up_page = (parsed.up_link or "").split("#")[0].removesuffix(".html")
        return up_page if up_page and up_page != "index" else page.page
    return parsed.first_section.strip("_") or page.page


def _by_section(blocks: list[Block]) -> dict[str, list[Block]]:
    sections: dict[str, list[Block]] = {}
    for block in blocks:
        sections.setdefault(block.section, []).append(block)
    return sections
