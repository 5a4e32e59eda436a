"""The package's shape: stage subpackages whose imports flow down the stages only, no import cycle
(function-level imports counted), no module over 400 lines, no function-level import of the package's
own modules outside the CLI (where deferring torch keeps `--help` fast)."""

from __future__ import annotations

import ast
from pathlib import Path

import codeunlearn

PACKAGE = Path(codeunlearn.__file__).parent
# Bottom to top: a package imports only itself and the packages before it.
LAYERS = (
    "core",
    "model",
    "data",
    "training",
    "baselines",
    "unlearning",
    "store",
    "evaluation",
    "translation",
    "pipeline",
    "requests",
    "tracking",
    "cli",
)
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _own_imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported module, is the import inside a function) for every import of the package's modules."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(parent[: len(parent) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.append((target, id(node) not in top_level))
    return found


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    deferred = []
    for name, path in modules.items():
        for target, inside_function in _own_imports(name, path, modules):
            edges[name].add(target)
            if inside_function and not name.startswith("codeunlearn.cli"):
                deferred.append(f"{name} imports {target}")
    return edges, deferred


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return components


def test_every_module_sits_in_a_stage_package():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert loose == []
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS)


def test_imports_flow_down_the_stages():
    edges, _ = _graph()
    upward = [
        f"{source} imports {target}"
        for source, targets in edges.items()
        for target in targets
        if _layer(source) in LAYERS
        and _layer(target) in LAYERS
        and LAYERS.index(_layer(target)) > LAYERS.index(_layer(source))
    ]
    assert upward == []


def test_no_import_cycle_counting_function_level_imports():
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_no_function_level_import_of_own_modules_outside_the_cli():
    _, deferred = _graph()
    assert deferred == []


def test_no_module_over_the_line_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_checks_see_a_cycle_an_upward_import_and_a_deferred_import(tmp_path):
    edges = {"codeunlearn.model.a": {"codeunlearn.data.b"}, "codeunlearn.data.b": {"codeunlearn.model.a"}}
    assert _cycles(edges) == [["codeunlearn.data.b", "codeunlearn.model.a"]]
    assert _cycles({"codeunlearn.model.a": {"codeunlearn.data.b"}, "codeunlearn.data.b": set()}) == []
    source = tmp_path / "fake.py"
    source.write_text(
        "from codeunlearn.core import paths\n\n\ndef f():\n    from codeunlearn.cli import main\n"
    )
    found = _own_imports("codeunlearn.model.fake", source, _modules())
    assert ("codeunlearn.core.paths", False) in found
    assert ("codeunlearn.cli.main", True) in found
    assert LAYERS.index(_layer("codeunlearn.cli.main")) > LAYERS.index(_layer("codeunlearn.model.fake"))
