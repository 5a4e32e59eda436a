"""Parallel corpora for the translation setting: one table of `id`, `text` (source), `target`, `label`.

Offline default: the King James Bible and the Spanish Reina-Valera 1909, verse-aligned (both SWORD
modules use the KJV versification), from Debian's `sword-text-kjv` and `sword-text-sparv`, read with
PyPI `pysword` (slow: ~40 s per Bible, so the pairs are cached as Parquet once). English-French, the
paper's pair: paragraphs of the Debian Reference and the Debian Administrator's Handbook, aligned
section by section from their installed HTML (`debian_manuals`), cached the same way. Any local
.parquet/.json/.jsonl/.csv file or datasets hub id with a source and a target column goes through
`corpus.load_corpus`, the same path as the monolingual corpora.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from codeunlearn.core.config import DataConfig, TranslationConfig
from codeunlearn.core.errors import ConfigError, MissingAssetError
from codeunlearn.data.corpus import load_corpus
from codeunlearn.data.debian_manuals import ManualPage, handbook_pages, read_manual_pairs, reference_pages
from codeunlearn.model.assets import cache_root

log = logging.getLogger(__name__)

BIBLE_CORPUS = "bible-en-es"
SWORD_DIR = Path("/usr/share/sword")
BIBLE_MODULES = ("engKJV2006eb", "spaRV1909eb")  # (source, target)
SWORD_INSTALL = "apt-get install sword-text-kjv sword-text-sparv && pip install pysword"
_SPACES = re.compile(r"\s+")

DEBIAN_CORPUS = "debian-en-fr"
DEBIAN_REFERENCE_DIR = Path("/usr/share/debian-reference")
DEBIAN_HANDBOOK_DIR = Path("/usr/share/doc/debian-handbook/html")
DEBIAN_PACKAGES = ("debian-reference-en", "debian-reference-fr", "debian-handbook")
DEBIAN_INSTALL = f"apt-get install {' '.join(DEBIAN_PACKAGES)}"
DEBIAN_ALIGNMENT_VERSION = 1  # part of the cache key: bump it when debian_manuals pairs differently


def load_parallel_corpus(data: DataConfig, translation: TranslationConfig) -> pa.Table:
    """The parallel corpus named by `data.corpus`: `id`, `text` (source), `target`, `label` first.

    Raises:
        MissingAssetError: the Bible modules or pysword, or the Debian manuals, are not installed, or the
            file is missing.
        ConfigError: the file has no target column (`translation.target_column`).
    """
    if data.corpus == "wordnet":
        raise ConfigError(
            f"data.corpus='wordnet' is not a parallel corpus: set data.corpus to {BIBLE_CORPUS!r}, "
            f"{DEBIAN_CORPUS!r} or to a "
            ".parquet/.jsonl/.csv file with source (data.text_column) and target (translation.target_column) "
            "columns"
        )
    if data.corpus == BIBLE_CORPUS:
        table = read_bible_pairs(SWORD_DIR)
    elif data.corpus == DEBIAN_CORPUS:
        table = read_debian_pairs(DEBIAN_REFERENCE_DIR, DEBIAN_HANDBOOK_DIR)
    else:
        table = load_corpus(data)
        if translation.target_column not in table.column_names:
            raise ConfigError(
                f"{data.corpus} has no target column {translation.target_column!r}; its columns are: "
                f"{', '.join(table.column_names)}. Set translation.target_column (and data.text_column "
                "to the source column)"
            )
        if translation.target_column != "target":
            table = table.rename_columns(
                ["target" if n == translation.target_column else n for n in table.column_names]
            )
    keep = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table["target"])), 0), False)
    table = table.filter(keep)
    core = ["id", "text", "target", "label"]
    return table.select(core + [n for n in table.column_names if n not in core])


def read_bible_pairs(sword_dir: Path = SWORD_DIR) -> pa.Table:
    """Verse pairs KJV (English) -> Reina-Valera 1909 (Spanish), labelled by book; cached as Parquet."""
    cached = cache_root() / "corpora" / f"{BIBLE_CORPUS}.parquet"
    if cached.is_file():
        return pq.read_table(cached)
    bibles = _open_bibles(sword_dir)
    rows: dict[str, list[str]] = {"id": [], "text": [], "target": [], "label": []}
    structure = bibles[0].get_structure().get_books()
    for book in [*structure["ot"], *structure["nt"]]:
        source = list(bibles[0].get_iter(books=[book.name], clean=True))
        target = list(bibles[1].get_iter(books=[book.name], clean=True))
        refs = [(c, v) for c, n in enumerate(book.chapter_lengths, 1) for v in range(1, n + 1)]
        for (chapter, verse), en, es in zip(refs, source, target, strict=True):
            rows["id"].append(f"{book.osis_name}.{chapter}.{verse}")
            rows["text"].append(_SPACES.sub(" ", en).strip())
            rows["target"].append(_SPACES.sub(" ", es).strip())
            rows["label"].append(book.name)
    table = pa.table(rows)
    _write_cache(table, cached)
    log.info("read %d verse pairs from %s; cached at %s", table.num_rows, sword_dir, cached)
    return table


def read_debian_pairs(
    reference_dir: Path = DEBIAN_REFERENCE_DIR, handbook_dir: Path = DEBIAN_HANDBOOK_DIR
) -> pa.Table:
    """Paragraph pairs English -> French of both Debian manuals, labelled `<manual>.<chapter>`.

    Cached as Parquet under a name that hashes the pages' paths, sizes and times, so an upgraded
    package (or other directories) is read afresh; `debian_manuals` says how paragraphs are aligned.

    Args:
        reference_dir: Where `debian-reference-en`/`-fr` put `<chapter>.en.html`/`.fr.html`.
        handbook_dir: Where `debian-handbook` puts its `en-US/` and `fr-FR/` HTML.

    Returns:
        `id`, `text` (English), `target` (French), `label`.

    Raises:
        MissingAssetError: A package is not installed; the message names the apt-get command.
    """
    pages = _debian_pages(reference_dir, handbook_dir)
    cached = _debian_cache_path(pages)
    if cached.is_file():
        return pq.read_table(cached)
    table, skipped = read_manual_pairs(pages)
    _write_cache(table, cached)
    log.info("aligned %d paragraph pairs from %d pages; cached at %s", table.num_rows, len(pages), cached)
    log.info("%d sections skipped (block counts differ between English and French)", len(skipped))
    return table


def _debian_cache_path(pages: list[ManualPage]) -> Path:
    """The cache file for these pages: its name hashes their paths, sizes and modification times."""
    key = hashlib.sha1(str(DEBIAN_ALIGNMENT_VERSION).encode())
    for page in pages:
        for path in (page.source, page.target):
            stat = path.stat()
            key.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache_root() / "corpora" / f"{DEBIAN_CORPUS}-{key.hexdigest()[:12]}.parquet"


def _debian_pages(reference_dir: Path, handbook_dir: Path) -> list[ManualPage]:
    """Both manuals' pages, or a MissingAssetError naming each package whose files are absent."""
    found = {
        "debian-reference-en": any(reference_dir.glob("*.en.html")),
        "debian-reference-fr": any(reference_dir.glob("*.fr.html")),
        "debian-handbook": all(any((handbook_dir / lang).glob("*.html")) for lang in ("en-US", "fr-FR")),
    }
    missing = [name for name in DEBIAN_PACKAGES if not found[name]]
    if missing:
        # Slim container images tell dpkg to skip /usr/share/doc, where the handbook's HTML goes.
        excluded = " (or, if installed, drop dpkg's path-exclude=/usr/share/doc/* and reinstall)"
        raise MissingAssetError(
            f"the {DEBIAN_CORPUS} corpus needs the Debian packages {', '.join(missing)} (no HTML found "
            f"in {reference_dir} or {handbook_dir}): install them with `{DEBIAN_INSTALL}` "
            f"(scripts/install.sh does){excluded if 'debian-handbook' in missing else ''}, or set "
            f"data.corpus to {BIBLE_CORPUS!r} or a parallel .parquet/.jsonl/.csv file"
        )
    return reference_pages(reference_dir) + handbook_pages(handbook_dir)


def _write_cache(table: pa.Table, cached: Path) -> None:
    """Write `table` to `cached` through a .partial file, so an interrupted write leaves no cache."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(cached.name + ".partial")
    pq.write_table(table, partial)
    partial.replace(cached)


def _open_bibles(sword_dir: Path) -> list:
    if importlib.util.find_spec("pysword") is None:
        raise MissingAssetError(f"the {BIBLE_CORPUS} corpus needs PyPI pysword: `{SWORD_INSTALL}`")
    from pysword.modules import SwordModules

    has_modules = (sword_dir / "mods.d").is_dir()
    modules = SwordModules(str(sword_dir)) if has_modules else None
    found = modules.parse_modules() if modules else {}
    missing = [name for name in BIBLE_MODULES if name not in found]
    if missing:
        raise MissingAssetError(
            f"the {BIBLE_CORPUS} corpus needs the SWORD modules {', '.join(missing)} in {sword_dir}: "
            f"install them with `{SWORD_INSTALL}` (scripts/install.sh does), or set data.corpus to a "
            "parallel .parquet/.jsonl/.csv file"
        )
    return [modules.get_bible_from_module(name) for name in BIBLE_MODULES]
