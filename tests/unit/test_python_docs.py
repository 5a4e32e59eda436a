"""The python-docs corpus: the Python library reference's paragraphs read into rows labelled by page."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeunlearn.core.config import DataConfig
from codeunlearn.core.data_config import PYTHON_DOCS_DIR
from codeunlearn.core.errors import MissingAssetError
from codeunlearn.core.fingerprint import data_fingerprint
from codeunlearn.data.corpus import load_corpus
from codeunlearn.data.python_docs import read_python_docs

# The shape of a Sphinx page as python3-doc installs it: navigation before and after the main body,
# a note's label and code inside it.
PAGE = """<html><body>
<div class="sphinxsidebar"><p class="topless">Previous topic: the string module and its helpers</p></div>
<div class="document"><div class="body" role="main">
<section id="module-{name}"><h1>{name} — a module<a class="headerlink" href="#">¶</a></h1>
<p>The {name} module provides   regular expression
matching operations similar to <code class="xref">Perl</code>.</p>
<div class="admonition note"><p class="admonition-title">See also</p>
<p>The third-party <em>regex</em> module has an API compatible with this one.</p></div>
<pre>import {name}</pre>
<p>Availability: Unix.</p>
<p>{shared}</p>
<p>The {name} module provides   regular expression
matching operations similar to <code class="xref">Perl</code>.</p>
</section></div></div>
<div class="footer"><p>Copyright 2001-2023, Python Software Foundation and its contributors.</p></div>
</body></html>
"""
SHARED = "Changed in version 3.7: this paragraph is on more than one page."


def _write(root: Path, name: str) -> None:
    (root / "library").mkdir(parents=True, exist_ok=True)
    (root / "library" / f"{name}.html").write_text(PAGE.format(name=name, shared=SHARED))


def test_one_row_per_body_paragraph_labelled_by_its_page(tmp_path: Path) -> None:
    _write(tmp_path, "re")
    table = read_python_docs(tmp_path)
    assert table.to_pylist() == [
        {
            "id": "re-00000",
            "text": "The re module provides regular expression matching operations similar to Perl.",
            "label": "re",
        },
        {
            "id": "re-00001",
            "text": "The third-party regex module has an API compatible with this one.",
            "label": "re",
        },
        {"id": "re-00002", "text": SHARED, "label": "re"},
    ]


def test_a_paragraph_on_two_pages_is_dropped_from_both(tmp_path: Path) -> None:
    _write(tmp_path, "re")
    _write(tmp_path, "glob")
    table = read_python_docs(tmp_path)
    assert table.to_pylist() == [
        {
            "id": "glob-00000",
            "text": "The glob module provides regular expression matching operations similar to Perl.",
            "label": "glob",
        },
        {
            "id": "re-00000",
            "text": "The re module provides regular expression matching operations similar to Perl.",
            "label": "re",
        },
    ]


def test_a_missing_reference_names_the_package_to_install(tmp_path: Path) -> None:
    with pytest.raises(MissingAssetError, match="apt-get install python3-doc"):
        read_python_docs(tmp_path)


@pytest.mark.skipif(
    not Path(PYTHON_DOCS_DIR, "library", "re.html").exists(), reason="Debian's python3-doc not installed"
)
def test_the_installed_package_loads_as_the_python_docs_corpus() -> None:
    config = DataConfig(corpus="python-docs")
    table = load_corpus(config)
    labels = table.column("label").to_pylist()
    assert table.num_rows > 15_000
    assert {"re", "os", "sqlite3", "argparse"} <= set(labels)
    assert sum(1 for label in set(labels) if labels.count(label) >= 150) >= 30
    assert data_fingerprint(config) != data_fingerprint(DataConfig(corpus="gcide"))
