"""The English-French Debian manuals corpus: section-wise paragraph alignment on hand-made pages, then
the real installed manuals (scripts/install.sh installs debian-reference-en/-fr and debian-handbook)."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codeunlearn.core.config import DataConfig, TranslationConfig
from codeunlearn.core.errors import MissingAssetError
from codeunlearn.data.debian_manuals import read_blocks
from codeunlearn.data.parallel_corpus import (
    DEBIAN_CORPUS,
    DEBIAN_HANDBOOK_DIR,
    DEBIAN_INSTALL,
    DEBIAN_REFERENCE_DIR,
    load_parallel_corpus,
    read_debian_pairs,
)

CONFIG = Path(__file__).parents[2] / "configs" / "translation-fr.yaml"
FRENCH_WORDS = re.compile(r"\b(le|la|les|des|du|de|un|une|et|est|pour|dans|que|qui|sur|avec|pas)\b", re.I)
ENGLISH_WORDS = re.compile(r"\b(the|and|is|with)\b")
# Tokens a translator copies unchanged: version and section numbers, URLs, file paths.
COPIED_TOKENS = re.compile(r"\d+(?:\.\d+)*|https?://\S+|/[\w./-]+")


def page(title_id: str, sections: dict[str, list[str]], up: str = "index.html") -> str:
    """A DocBook-like page: a table of contents, then one titled section per entry of `sections`."""
    body = "".join(
        f'<div class="section"><div class="titlepage"><h2 class="title"><a id="{sid}"/>{sid} title</h2>'
        f"</div>{''.join(blocks)}</div>"
        for sid, blocks in sections.items()
    )
    return (
        f'<html><head><link rel="up" href="{up}"/></head><body>'
        '<div class="navheader"><p>Prev Next</p></div>'
        f'<div class="chapter"><h1 class="title"><a id="{title_id}"/>Chapter</h1>'
        '<div class="toc"><p><strong>Table of Contents</strong></p></div>'
        f"{body}</div></body></html>"
    )


@pytest.fixture
def manuals(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Tiny copies of both manuals' layouts, and a cache under tmp_path."""
    monkeypatch.setenv("CODEUNLEARN_CACHE", str(tmp_path / "cache"))
    reference, handbook = tmp_path / "debian-reference", tmp_path / "handbook"
    for lang in ("en-US", "fr-FR"):
        (handbook / lang).mkdir(parents=True)
    reference.mkdir()
    en = {
        "_same": ["<p>The kernel boots first.</p>", "<p>Then <code>init</code> runs.</p>"],
        "_mismatch": ["<p>One.</p>", "<p>Two sentences here.</p>", "<p>Three of them.</p>"],
        "_code": ["<p>Run this command:</p>", "<pre>$ apt-get update\n</pre>", "<p>apt-get update</p>"],
    }
    fr = {
        "_same": ["<p>Le noyau démarre en premier.</p>", "<p>Puis <code>init</code> est lancé.</p>"],
        "_mismatch": ["<p>Un.</p>", "<p>Deux phrases ici. Trois phrases.</p>"],
        "_code": ["<p>Lancez cette commande :</p>", "<pre>$ apt-get update\n</pre>", "<p>apt-get update</p>"],
    }
    (reference / "ch01.en.html").write_text(page("_system_basics", en))
    (reference / "ch01.fr.html").write_text(page("_system_basics", fr))
    paras = {
        "en-US": '<div class="para">Type <pre>ls -l</pre> to list the files.</div>',
        "fr-FR": '<div class="para">Tapez <pre>ls -l</pre> pour afficher les fichiers.</div>',
    }
    for lang, para in paras.items():  # a section page of the handbook's chapter apt.html
        (handbook / lang / "sect.files.html").write_text(
            page("sect.files", {"sect.files": [para]}, "apt.html")
        )
    return reference, handbook


def test_sections_pair_paragraph_by_paragraph_and_mismatched_ones_are_skipped(manuals):
    pairs = read_debian_pairs(*manuals).to_pylist()
    by_id = {row["id"]: row for row in pairs}
    assert by_id["reference.ch01._same.1"]["target"] == "Le noyau démarre en premier."
    assert by_id["reference.ch01._same.2"]["text"] == "Then init runs."  # inline markup keeps its text
    assert not any("_mismatch" in row_id for row_id in by_id)  # 3 English paragraphs, 2 French: skipped
    assert not any("Table of Contents" in row["text"] or "Prev" in row["text"] for row in pairs)
    assert {row["label"] for row in pairs} == {"reference.system_basics", "handbook.apt"}


def test_code_blocks_and_untranslated_command_lines_are_not_pairs(manuals):
    texts = [row["text"] for row in read_debian_pairs(*manuals).to_pylist()]
    assert "Run this command:" in texts  # the section still aligns: the <pre> counts in both languages
    assert not any("apt-get update" in text or "ls -l" in text for text in texts)
    # A <pre> inside a handbook para splits it; each side of it pairs with its French counterpart.
    assert texts[-2:] == ["Type", "to list the files."]


def test_cache_is_reused_until_a_page_changes(manuals):
    first = read_debian_pairs(*manuals)
    (cached,) = (Path(manuals[0].parent) / "cache" / "corpora").glob(f"{DEBIAN_CORPUS}-*.parquet")
    pq.write_table(first.slice(0, 1), cached)  # a marker: a reused cache returns it
    assert read_debian_pairs(*manuals).num_rows == 1
    english = manuals[0] / "ch01.en.html"
    english.write_text(english.read_text().replace("boots first", "starts first"))
    fresh = read_debian_pairs(*manuals)
    assert fresh.num_rows == first.num_rows and "The kernel starts first." in fresh["text"].to_pylist()


def test_missing_manuals_name_the_apt_command(tmp_path):
    with pytest.raises(MissingAssetError, match=re.escape(f"`{DEBIAN_INSTALL}`")) as raised:
        read_debian_pairs(tmp_path / "no-reference", tmp_path / "no-handbook")
    assert "debian-reference-en, debian-reference-fr, debian-handbook" in str(raised.value)
    assert DEBIAN_INSTALL == "apt-get install debian-reference-en debian-reference-fr debian-handbook"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pa.Table:
    """The real corpus, built from the installed manuals into a fresh cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CODEUNLEARN_CACHE", str(tmp_path_factory.mktemp("cache")))
        return load_parallel_corpus(DataConfig(corpus=DEBIAN_CORPUS), TranslationConfig(target_name="French"))


def test_installed_manuals_give_thousands_of_labelled_pairs(corpus):
    labels = set(corpus["label"].to_pylist())
    print(f"{DEBIAN_CORPUS}: {corpus.num_rows} pairs, {len(labels)} labels")
    assert corpus.column_names[:4] == ["id", "text", "target", "label"]
    assert 3000 < corpus.num_rows < 10000 and len(labels) >= 30  # 4,715 and 36 from the bookworm packages
    assert len(set(corpus["id"].to_pylist())) == corpus.num_rows
    assert {label.split(".")[0] for label in labels} == {"reference", "handbook"}
    assert {"handbook.apt", "reference.debian_package_management"} <= labels


def test_installed_pairs_are_translations(corpus):
    rows = corpus.to_pylist()
    with_tokens = [row for row in rows if COPIED_TOKENS.search(row["text"])]
    copied = [r for r in with_tokens if all(t in r["target"] for t in COPIED_TOKENS.findall(r["text"]))]
    assert len(copied) > 0.85 * len(with_tokens)  # 91% of 2,079: translators spell out some numbers
    assert sum(bool(FRENCH_WORDS.search(row["target"])) for row in rows) > 0.85 * len(rows)  # 92%
    assert sum(bool(ENGLISH_WORDS.search(row["target"])) for row in rows) < 0.1 * len(rows)  # 3%
    assert not any(row["text"] == row["target"] for row in rows)
    (uniq,) = [row for row in rows if row["text"].startswith("uniq(1) removes duplicate lines")]
    assert "supprime les lignes" in uniq["target"]


def test_installed_code_blocks_are_left_out(corpus):
    english = read_blocks((DEBIAN_REFERENCE_DIR / "ch02.en.html").read_text(encoding="utf-8")).blocks
    french = read_blocks((DEBIAN_REFERENCE_DIR / "ch02.fr.html").read_text(encoding="utf-8")).blocks
    shared_code = {b.text for b in english if b.is_code} & {b.text for b in french if b.is_code}
    assert len(shared_code) > 10  # the chapter's <pre> blocks that are the same in both languages
    assert not shared_code & set(corpus["text"].to_pylist())
    assert (DEBIAN_HANDBOOK_DIR / "fr-FR" / "index.html").is_file()


def test_translation_fr_yaml_loads_and_its_topic_is_a_few_percent_of_the_corpus(corpus):
    from codeunlearn.core.config import load_config

    config = load_config(CONFIG)
    assert config.data.corpus == DEBIAN_CORPUS and config.translation.target_name == "French"
    words = "|".join(config.topic.keywords)
    on_topic = [t for t in corpus["text"].to_pylist() if re.search(rf"(?<!\w)(?:{words})(?!\w)", t, re.I)]
    print(f"topic {list(config.topic.keywords)}: {len(on_topic)} of {corpus.num_rows} English paragraphs")
    assert 0.02 * corpus.num_rows < len(on_topic) < 0.1 * corpus.num_rows  # 179 (3.8%)
