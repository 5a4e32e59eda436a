"""The core runs on a bare GPU box: importing every library module except the tracking layer
(`tracking`, the one module that imports MLflow, and `tracked`, the stages that log through it) pulls
in neither Prefect nor MLflow."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import codeunlearn

TRACKING_LAYER = "codeunlearn.tracking"


def test_core_imports_neither_prefect_nor_mlflow():
    names = [m.name for m in pkgutil.walk_packages(codeunlearn.__path__, "codeunlearn.")]
    modules = [
        name for name in names if not name.endswith("__main__") and not name.startswith(TRACKING_LAYER)
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


def test_only_the_tracking_package_imports_mlflow_and_no_module_imports_prefect():
    package = Path(codeunlearn.__file__).parent
    importers = {
        path.relative_to(package).with_suffix("").as_posix(): set(
            re.findall(r"^\s*(?:import|from)\s+(mlflow|prefect)\b", path.read_text(), re.M)
        )
        for path in package.rglob("*.py")
    }
    assert {name for name, found in importers.items() if "mlflow" in found} == {
        "tracking/tracker",
        "tracking/pyfunc",
    }
    assert not any("prefect" in found for name, found in importers.items() if not name.startswith("cli/"))


# What bench/ imports of the library, to run on the GPU image: torch, transformers and their own
# dependencies (numpy, pyyaml, safetensors, tqdm), nothing else.
GPU_IMAGE_MODULES = (
    "model.bottleneck",
    "model.code_index",
    "model.surgery",
    "training.trainer",
    "unlearning.mining",
    "unlearning.selection",
    "unlearning.masks",
    "baselines.registry",
    "data.batching",
)


def test_the_benchmarked_core_needs_only_torch_and_transformers():
    modules = [f"codeunlearn.{name}" for name in GPU_IMAGE_MODULES]
    absent = ("scipy", "pyarrow", "duckdb", "datasets", "pandas", "prefect", "mlflow", "gguf")
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(absent)!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
