"""The import graph of src/shoal: no cycles (imports under TYPE_CHECKING are annotations
only and do not count). A module that needs a higher layer's verb gets it from above — as
shoal.api adds plan/run/results to the definition of shoal.spec — never by importing up."""

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


def test_the_definition_layer_imports_nothing_above_it() -> None:
    """spec (Experiment, Step, the checks) may use the grid, paths and errors, never the
    planner, the runner, results or the CLI."""
    known = _modules()
    above = ("shoal.plan", "shoal.decide", "shoal.runner", "shoal.schedule", "shoal.results",
             "shoal.report", "shoal.cli", "shoal.backends", "shoal.worker", "shoal.api")
    for name in ("shoal.spec", "shoal.step", "shoal.around", "shoal.grid", "shoal.validate",
                 "shoal.validate_around"):
        bad = {m for m in _imports(known[name], known) if m.startswith(above)}
        assert not bad, f"{name} imports {sorted(bad)}"
