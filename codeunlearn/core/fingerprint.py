"""Fingerprints of what a cached stage result depends on beyond its config: the corpus on disk and the
library's code. Prefect's task cache keys include them, so an edited corpus or a new release of the
code never serves a stale result."""

from __future__ import annotations

import hashlib
from pathlib import Path

from codeunlearn.core.config import DataConfig

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def code_fingerprint(root: Path = PACKAGE_ROOT) -> str:
    """sha256 over every .py file of the package under `root`: relative path and contents."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def data_fingerprint(data: DataConfig) -> str:
    """sha256 over the path, size and modification time of every file of the configured corpus (the
    WordNet or fortunes directory, or a local file or directory); a hub id is fingerprinted by its name
    only."""
    source = data.source_path
    digest = hashlib.sha256(str(source).encode())
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    for path in files:
        if path.exists():
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def stage_fingerprint(data: DataConfig) -> str:
    """The data's and the code's fingerprints in one key."""
    return hashlib.sha256((data_fingerprint(data) + code_fingerprint()).encode()).hexdigest()[:16]
