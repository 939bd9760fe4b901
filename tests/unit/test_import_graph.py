"""No import cycle inside ``gleitzeit_llm/`` (issue #13).

The graph is built from the source with :mod:`ast`, without importing anything. How an import counts:

* An edge ``a -> b`` is an ``import`` or ``from ... import`` statement in module ``a`` that names
  module ``b`` of this package: ``from x.y import name`` points at ``x.y.name`` when that is a module
  and at ``x.y`` otherwise; relative imports are resolved against the importing module's package.
* Imports inside functions and methods **count**. A lazy import that exists to dodge a cycle at
  import time is still a cycle in the design: each module needs the other, and a reader (or a
  refactor) meets the knot all the same. Imports under ``if TYPE_CHECKING:`` do **not** count:
  they never run, they only name types (the ``else`` branch of such an ``if`` counts).
* Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``; those implicit edges are left
  out, as import-linter/grimp do, or every package whose ``__init__`` re-exports its submodules
  would be a cycle with each of them. An explicit ``from a.b import name`` (``name`` not a module)
  does point at ``a.b``, so a submodule that imports its own package's facade is caught.
* Dynamic imports (``importlib.import_module(variable)``, the lazy names of the root
  ``__init__``) are not seen.

Cycles that run through modules another part of #13 is rewriting are tolerated for now, as the
explicit :data:`KNOWN_CYCLE_EDGES` below; every other cycle fails the test with its path.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gleitzeit_llm

PACKAGE = "gleitzeit_llm"
ROOT = Path(gleitzeit_llm.__file__).resolve().parent

#: Imports (importer, imported) that close cycles through provider.py, manager.py, config.py,
#: routing/, connections.py, workflow.py or ollama/, left to the engineers rewriting those
#: modules; the test removes these edges before it looks for cycles and warns about them. Empty:
#: on ddccb74 the graph above has no cycle (the issue's emulator <-> api/admin knot and
#: manager <-> queue were type-hint imports only; the first is gone, see the testing/ test).
#: #13: removed by the coordinator after merging
KNOWN_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Edge:
    """One import statement of this package's module ``source`` naming module ``target``."""

    source: str
    target: str
    line: int


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(node: ast.AST, type_checking: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement below ``node`` (in functions too); those under ``if TYPE_CHECKING:``
    only when ``type_checking``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test) and not type_checking:
            for branch in child.orelse:
                if isinstance(branch, (ast.Import, ast.ImportFrom)):
                    yield branch
                else:
                    yield from _imports(branch, type_checking)
        else:
            yield from _imports(child, type_checking)


def _edges(module: str, path: Path, known: set[str], type_checking: bool = False) -> Iterator[Edge]:
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in _imports(tree, type_checking):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in known:  # `import a.b.c` of a name in a.b
                    target = target.rpartition(".")[0]
                if target:
                    yield Edge(module, target, node.lineno)
            continue
        if node.level:
            package = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        if base not in known and not base.startswith(f"{PACKAGE}."):
            continue
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            target = submodule if submodule in known else base
            if target in known:
                yield Edge(module, target, node.lineno)


def import_graph(*, type_checking: bool = False) -> dict[str, dict[str, Edge]]:
    """``{module: {imported module: first edge}}`` for every module of the package
    (with ``type_checking``, imports for type hints only count too)."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, dict[str, Edge]] = {name: {} for name in modules}
    for name, path in modules.items():
        for edge in _edges(name, path, known, type_checking):
            if edge.target != name:
                graph[name].setdefault(edge.target, edge)
    return graph


def _components(graph: dict[str, dict[str, Edge]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def _cycle_in(graph: dict[str, dict[str, Edge]], component: list[str]) -> list[Edge]:
    """One shortest cycle through the component's first module, as the import statements."""
    members = set(component)
    start = component[0]
    previous: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target, edge in sorted(graph[node].items()):
                if target not in members:
                    continue
                if target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, previous[path[0].source])
                    return path
                if target not in previous:
                    previous[target] = edge
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def cycles(graph: dict[str, dict[str, Edge]]) -> list[list[Edge]]:
    """One cycle per knot of the graph (a strongly connected component), as import statements."""
    return [_cycle_in(graph, component) for component in _components(graph)]


def _describe(cycle: list[Edge]) -> str:
    short = PACKAGE + "."
    steps = [f"{e.source.removeprefix(short)}:{e.line} -> {e.target.removeprefix(short)}" for e in cycle]
    return "; ".join(steps)


def test_the_package_has_no_import_cycle_beyond_the_known_ones() -> None:
    graph = import_graph()
    known = cycles(graph)
    for source, target in KNOWN_CYCLE_EDGES:
        graph.get(source, {}).pop(target, None)
    found = cycles(graph)
    assert not found, "import cycles in gleitzeit_llm/:\n" + "\n".join(_describe(c) for c in found)
    if known:  # tolerated for now, but said out loud in every run
        warnings.warn("known import cycles (#13): " + " | ".join(_describe(c) for c in known), stacklevel=1)


def test_the_emulator_modules_do_not_import_each_other_even_for_type_hints() -> None:
    # The emulator's face owns an EmulatorState and hands it to the request handlers; a handler
    # that names the emulator, even only in a hint, is the knot #13 removed (testing/state.py).
    testing = f"{PACKAGE}.testing"
    graph = {
        name: {target: edge for target, edge in targets.items() if target.startswith(testing)}
        for name, targets in import_graph(type_checking=True).items()
        if name.startswith(testing)
    }
    found = cycles(graph)
    assert not found, "import cycles in gleitzeit_llm/testing/:\n" + "\n".join(_describe(c) for c in found)


def _graph(edges: dict[str, list[str]]) -> dict[str, dict[str, Edge]]:
    return {a: {b: Edge(a, b, 1) for b in targets} for a, targets in edges.items()}


def test_the_cycle_finder_reports_each_knot_once_with_a_path() -> None:
    graph = _graph({"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": ["d"], "f": ["a"]})
    found = cycles(graph)
    assert [[(e.source, e.target) for e in c] for c in found] == [
        [("a", "b"), ("b", "c"), ("c", "a")],
        [("d", "e"), ("e", "d")],
    ]
    assert cycles(_graph({"a": ["b"], "b": [], "c": ["a", "b"]})) == []


def test_function_level_imports_count_and_type_checking_ones_do_not(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import gleitzeit_llm.errors\n"
        "if TYPE_CHECKING:\n"
        "    from gleitzeit_llm.manager import OllamaPoolManager\n"
        "else:\n"
        "    from gleitzeit_llm import options\n"
        "def lazy():\n"
        "    from gleitzeit_llm.provider import OllamaPoolProvider\n"
        "    from .queue import SlotQueue\n",
        encoding="utf-8",
    )
    known = {"gleitzeit_llm", "gleitzeit_llm.errors", "gleitzeit_llm.manager", "gleitzeit_llm.options"}
    known |= {"gleitzeit_llm.provider", "gleitzeit_llm.queue"}
    targets = [(e.target, e.line) for e in _edges("gleitzeit_llm.mod", source, known)]
    assert targets == [
        ("gleitzeit_llm.errors", 2),
        ("gleitzeit_llm.options", 6),
        ("gleitzeit_llm.provider", 8),
        ("gleitzeit_llm.queue", 9),
    ]
    with_hints = [e.target for e in _edges("gleitzeit_llm.mod", source, known, type_checking=True)]
    assert "gleitzeit_llm.manager" in with_hints and "gleitzeit_llm.options" in with_hints
