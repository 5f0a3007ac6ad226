"""No import cycles in gmdf_cli: a module can be read (and imported) after the ones it imports, never in a loop.

The graph's edges are the imports a module runs when it is imported: its top-level ``import`` and ``from``
statements (also those under a top-level ``if``, ``try`` or ``with``, and in class bodies), relative ones resolved.
Imports under ``if TYPE_CHECKING:`` never run: never an edge. Imports inside functions are deliberate lazy imports
(torch and the model load after every usage check): not an edge of the start-up graph, but an edge of the lazy one,
which must have no cycle either. ``from pkg import name`` is an edge to ``pkg.name``
where that is a module, else to ``pkg``; a package is its ``__init__.py``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gmdf_cli"


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name, for its ``__init__.py``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_on_import(body: list[ast.stmt], lazy: bool = False) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements among those that run when the module is imported (not for typing; those inside
    functions too when ``lazy``)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _run_on_import(node.body, lazy)
            yield from _run_on_import(node.orelse, lazy)
        elif isinstance(node, ast.Try | ast.TryStar):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _run_on_import(block, lazy)
        elif isinstance(node, ast.With | ast.For | ast.While | ast.ClassDef) or (
            lazy and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        ):
            yield from _run_on_import(node.body, lazy)
            yield from _run_on_import(getattr(node, "orelse", []), lazy)


def imports_of(name: str, path: Path, modules: dict[str, Path], lazy: bool = False) -> set[str]:
    """The package's modules that ``name`` imports when it is imported (or later, in its functions, when
    ``lazy``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _run_on_import(ast.parse(path.read_text(), str(path)).body, lazy):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {target for target in found if target in modules and target != name}


def import_graph(root: Path = PACKAGE, lazy: bool = False) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, path, modules, lazy) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as the path that closes it (``[a, b, a]``), or None when it has none."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once every path from it is explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_cycle_even_through_the_imports_inside_functions() -> None:
    """DESIGN.md: lazy imports keep start-up fast, never a loop that only shows once a function runs."""
    cycle = find_cycle(import_graph(lazy=True))
    assert cycle is None, "import cycle through a lazy import: " + " -> ".join(cycle or [])


def test_the_graph_sees_the_imports_it_should() -> None:
    """Relative imports resolved, ``from . import module`` and packages named as modules: a graph that finds no
    edges would find no cycle either."""
    graph = import_graph()
    assert "gmdf_cli.jobs.scan.request" in graph["gmdf_cli.jobs.scan.pool"]
    assert "gmdf_cli.report.results" in graph["gmdf_cli.jobs.scan.request"]
    assert "gmdf_cli.jobs.scan.run" in graph["gmdf_cli.jobs.scan"]
    assert "gmdf_cli.api" not in graph["gmdf_cli.jobs.scan.request"]  # under TYPE_CHECKING
    assert "gmdf_cli.jobs.scan.pool" not in graph["gmdf_cli.jobs.scan.run"]  # inside a function: lazy
    assert "gmdf_cli.jobs.scan.pool" in import_graph(lazy=True)["gmdf_cli.jobs.scan.run"]


def test_a_cycle_is_found_and_named() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
