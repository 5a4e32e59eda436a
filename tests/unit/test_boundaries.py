"""The core runs on a bare GPU box: importing every library module pulls in neither Prefect nor MLflow."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import codeunlearn


def test_core_imports_neither_prefect_nor_mlflow():
    modules = [
        f"codeunlearn.{m.name}" for m in pkgutil.iter_modules(codeunlearn.__path__) if m.name != "__main__"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'mlflow')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert len(modules) >= 15
