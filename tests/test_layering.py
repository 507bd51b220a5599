"""The report package's layering: no import cycle, and paper / compare / check see only the view.

The import graph is read from the sources (every import statement, including those under
``TYPE_CHECKING`` and inside functions), so a cycle that only a type checker or a late call
would walk is caught too; each module is also imported alone in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import uqbench

PACKAGE = Path(uqbench.__file__).parent
#: Modules of the report and of what reads results: none may sit on an import cycle.
LAYERED = (
    "uqbench.report",
    "uqbench.report.view",
    "uqbench.report.style",
    "uqbench.report.document",
    "uqbench.report.figures",
    "uqbench.report.sections",
    "uqbench.paper",
    "uqbench.compare",
    "uqbench.stats",
    "uqbench.check",
    "uqbench.tolerances",
    "uqbench.metric_catalog",
)
#: The report's presentation modules, which the modules that only read results must not reach.
PRESENTATION = (
    "uqbench.report.style",
    "uqbench.report.document",
    "uqbench.report.figures",
    "uqbench.report.sections",
)


def _module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("uqbench", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def import_graph() -> dict[str, set[str]]:
    """For each module of uqbench, the uqbench modules its source imports (grimp's rule:
    ``from pkg import name`` is an import of ``pkg.name`` when that is a module, else of
    ``pkg``)."""
    files = _module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for a in node.names:
                    deps.add(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert reachable(graph, "d") == {"a", "b", "c"}


def test_no_import_cycle_through_the_report_paper_or_check():
    graph = import_graph()
    assert set(LAYERED) <= set(graph), "a layered module is missing"
    bad = [sorted(c) for c in cycles(graph) if c & set(LAYERED)]
    assert bad == []


@pytest.mark.parametrize(
    "module", ["uqbench.paper", "uqbench.compare", "uqbench.check", "uqbench.tolerances"]
)
def test_paper_compare_and_check_depend_on_the_view_only(module: str):
    graph = import_graph()
    reached = reachable(graph, module)
    assert not reached & set(PRESENTATION)
    assert "uqbench.report.view" in reached or module in ("uqbench.check", "uqbench.tolerances")


@pytest.mark.parametrize("module", LAYERED)
def test_each_module_imports_alone_in_a_fresh_interpreter(module: str):
    out = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr


def test_importing_the_view_loads_no_plotting():
    code = "import sys, uqbench.report, uqbench.paper; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
