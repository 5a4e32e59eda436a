"""Fingerprints in the cached stages' keys change when the corpus on disk or the code changes."""

from __future__ import annotations

import os
import shutil

from codeunlearn.core.config import DataConfig
from codeunlearn.core.fingerprint import PACKAGE_ROOT, code_fingerprint, data_fingerprint, stage_fingerprint


def test_a_corpus_file_edited_changes_the_data_fingerprint(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "a"}\n')
    data = DataConfig(corpus=str(corpus))
    before = data_fingerprint(data)
    assert data_fingerprint(data) == before  # stable while nothing changes
    corpus.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert data_fingerprint(data) != before


def test_a_wordnet_file_touched_changes_the_data_fingerprint(tmp_path):
    (tmp_path / "data.noun").write_text("x")
    data = DataConfig(wordnet_dir=str(tmp_path))
    before = data_fingerprint(data)
    stat = (tmp_path / "data.noun").stat()
    os.utime(tmp_path / "data.noun", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert data_fingerprint(data) != before


def test_the_code_fingerprint_follows_the_package_sources(tmp_path):
    copy = tmp_path / "codeunlearn"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_fingerprint(copy) == code_fingerprint(PACKAGE_ROOT)
    (copy / "core" / "paths.py").write_text((copy / "core" / "paths.py").read_text() + "\n# changed\n")
    assert code_fingerprint(copy) != code_fingerprint(PACKAGE_ROOT)


def test_the_stage_key_joins_both(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("x")
    key = stage_fingerprint(DataConfig(corpus=str(corpus)))
    assert len(key) == 16 and key == stage_fingerprint(DataConfig(corpus=str(corpus)))
    corpus.write_text("xy")
    assert stage_fingerprint(DataConfig(corpus=str(corpus))) != key
