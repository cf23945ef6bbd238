"""The import graph of src/shoal: a folder per layer, no import from a layer to one above
it, no cycles (imports under TYPE_CHECKING are annotations only and do not count). A module
that needs a higher layer's verb gets it from above — as shoal.api.experiment adds
plan/run/results to the definition of shoal.spec.experiment — never by importing up."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "shoal").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shoal"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("shoal"))
    return {m for m in found if m in known and m != "shoal"}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle() -> None:
    known = _modules()
    graph = {name: _imports(path, known) for name, path in known.items()}
    assert _cycles(graph) == []


#: What each layer may import (DESIGN.md's table: a layer knows nothing of those above it).
#: A module's layer is its folder under src/shoal (backends.base apart from the engines).
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "torch": set(),
    "spec": {"errors"},
    "state": {"errors"},
    "plan": {"errors", "spec", "state"},
    "context": {"errors", "state"},
    "worker": {"errors", "spec", "state", "plan", "context"},
    "results": {"errors", "spec", "state", "plan"},
    "backends.base": {"errors", "state", "worker"},
    "schedule": {"errors", "spec", "state", "plan", "worker", "backends.base"},
    "backends": {"errors", "spec", "state", "plan", "context", "worker", "backends.base"},
    "api": {"errors", "spec", "state", "plan", "context", "worker", "results",
            "backends.base", "schedule", "backends"},
    "cli": {"errors", "spec", "state", "plan", "context", "worker", "results",
            "backends.base", "schedule", "backends", "api"},
}


def _layer(module: str) -> str | None:
    """``shoal.plan.build`` -> ``plan``; ``shoal.backends.base`` -> ``backends.base``;
    the package itself (the public API) -> None (it may import anything)."""
    parts = module.split(".")[1:]
    if not parts:
        return None
    if parts[:2] == ["backends", "base"]:
        return "backends.base"
    return parts[0]


def test_every_module_lives_in_a_layer_folder() -> None:
    """The tree shows the layers: no module lies flat in src/shoal but the package's own
    files (the public API), errors and the public shoal.torch."""
    flat = {name for name, path in _modules().items()
            if name.count(".") == 1 and path.name != "__init__.py"}
    assert flat <= {"shoal.errors", "shoal.torch", "shoal.__main__"}, sorted(flat)
    assert {_layer(n) for n in _modules()} - {None} <= set(MAY_IMPORT)


def test_no_layer_imports_one_above_it() -> None:
    known = _modules()
    bad = []
    for name, path in sorted(known.items()):
        layer = _layer(name)
        if layer is None:
            continue
        for dep in _imports(path, known):
            other = _layer(dep)
            if other is not None and other != layer and other not in MAY_IMPORT[layer]:
                bad.append(f"{name} imports {dep} ({layer} may not use {other})")
    assert bad == []


def test_the_layer_table_is_a_hierarchy() -> None:
    """MAY_IMPORT itself has no cycle (so the layers have an order)."""
    graph = {k: set(v) for k, v in MAY_IMPORT.items()}
    assert _cycles(graph) == []
