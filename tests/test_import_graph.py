"""The library's import graph is acyclic, also counting imports inside functions (issue 13).

The graph is built from the source (AST), not by importing: an edge ``a -> b`` means that
running module ``a``'s top level imports module ``b``. Imports inside functions are not
edges of that graph (they run later, when the function is called) but are of the
``all_imports`` one, which must be acyclic too; imports under ``if TYPE_CHECKING:`` are
edges of neither. Importing ``p.q.r`` also runs the ``__init__`` of ``p`` and ``p.q``,
so those are edges too, except the importer's own ancestor packages (already running or
run by the time it is)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lcnn_audit

PACKAGE = "lcnn_audit"
ROOT = Path(lcnn_audit.__file__).resolve().parent


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(tree: ast.Module):
    """Import statements run by the module's top level (also inside module-level if/try/with)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                stack.extend(node.body)
            stack.extend(node.orelse)
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            stack.extend(node.body + node.orelse + node.finalbody)
            for h in node.handlers:
                stack.extend(h.body)
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            stack.extend(node.body + getattr(node, "orelse", []))
        # functions, classes' methods and lambdas run later: not edges (class bodies run now)
        elif isinstance(node, ast.ClassDef):
            stack.extend(n for n in node.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _all_imports(tree: ast.Module):
    """Every import statement, also inside functions, except under ``if TYPE_CHECKING:``."""
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
            for stmt in node.body for n in ast.walk(stmt)}
    return (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skip)


def import_graph(files: dict[str, Path] | None = None, all_imports: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules its top level imports (``all_imports``: also in functions)."""
    files = module_files() if files is None else files
    imports = _all_imports if all_imports else _top_level_imports
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        here = name if is_pkg else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
                continue
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets.add(mod)
            for a in node.names:  # ``from pkg import sub`` imports the submodule ``pkg.sub``
                if f"{mod}.{a.name}" in files:
                    targets.add(f"{mod}.{a.name}")
        own = set(_ancestors(name))
        edges = set()
        for t in targets:
            if t not in files:
                continue  # outside the package (torch, typer...)
            edges.update(a for a in (*_ancestors(t), t) if a in files and a not in own and a != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None if the graph is acyclic (iterative DFS)."""
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the current path, 2 done
    for start in sorted(graph):
        if colour[start]:
            continue
        path, iters = [start], [iter(sorted(graph[start]))]
        colour[start] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                colour[path.pop()] = 2
                iters.pop()
            elif colour.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif colour.get(nxt) == 0:
                colour[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph[nxt])))
    return None


def test_library_import_graph_is_acyclic():
    graph = import_graph()
    assert len(graph) > 50 and "lcnn_audit.geometry.hvp" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for nxt in graph.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def cyclic_groups(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (mutual reachability)."""
    reach = {m: _reachable(graph, m) for m in graph}
    groups = {frozenset(n for n in reach[m] if m in reach[n]) | {m} for m in graph if m in reach[m]}
    return sorted((set(g) for g in groups if len(g) > 1), key=sorted)


def test_no_cycle_even_counting_function_level_imports():
    """Counting imports inside functions too (not ``TYPE_CHECKING`` ones), the whole library is
    acyclic: no function-level import stands in for a layering fix. The last such cycle,
    loading <-> convert <-> recipe, went with the ``model/`` split (issue 13): ``convert``
    needs only ``model.wrapper``/``model.checkpoint``, ``model.recipe`` and ``model.load`` sit
    above it. A new cycle fails here, naming its modules."""
    graph = import_graph(all_imports=True)
    assert "lcnn_audit.model.load" in graph and "lcnn_audit.convert" in graph["lcnn_audit.model.load"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle (counting function-level imports): " + " -> ".join(cycle)
    assert cyclic_groups(graph) == []


def test_model_layers():
    """The layering that keeps ``model/`` and ``convert`` acyclic (see ``lcnn_audit/model/__init__.py``):
    the lower model modules reach neither ``convert`` nor the modules above it, and ``convert``
    reaches no model module above ``wrapper``/``checkpoint``."""
    graph = import_graph(all_imports=True)
    above = {"lcnn_audit.convert", "lcnn_audit.model.recipe", "lcnn_audit.model.load", "lcnn_audit.loading",
             "lcnn_audit.recipe"}
    for low in ("lcnn_audit.model", "lcnn_audit.model.wrapper", "lcnn_audit.model.arch",
                "lcnn_audit.model.checkpoint"):
        assert not _reachable(graph, low) & above, low
    assert not _reachable(graph, "lcnn_audit.convert") & (above - {"lcnn_audit.convert"})


def test_re_adding_the_old_function_level_import_is_a_cycle():
    """The check can fail on the real graph: ``convert_checkpoint``'s old
    ``from .loading import save_model`` (inside the function) closes convert -> model.load -> convert."""
    graph = import_graph(all_imports=True)
    graph["lcnn_audit.convert"] = graph["lcnn_audit.convert"] | {"lcnn_audit.model.load"}
    cycle = find_cycle(graph)
    assert cycle is not None and {"lcnn_audit.convert", "lcnn_audit.model.load"} <= set(cycle)
    assert {"lcnn_audit.convert", "lcnn_audit.model.load"} <= next(g for g in cyclic_groups(graph)
                                                                  if "lcnn_audit.convert" in g)


def test_library_never_imports_the_cli():
    """Data flows up to the CLI, never back: no library module imports ``lcnn_audit.cli``,
    not even inside a function (``demo`` used to import the CLI renderers)."""
    graph = import_graph(all_imports=True)
    offenders = {m: sorted(t for t in ts if t.startswith("lcnn_audit.cli"))
                 for m, ts in graph.items() if not m.startswith("lcnn_audit.cli") and m != "lcnn_audit.__main__"}
    assert not {m: ts for m, ts in offenders.items() if ts}


def test_every_demo_step_has_a_cli_renderer():
    from lcnn_audit.cli.demo import RENDERERS
    from lcnn_audit.demo import DEMO_STEPS

    assert [s.name for s in DEMO_STEPS] == list(RENDERERS)


def test_graph_sees_relative_package_and_submodule_imports():
    g = import_graph()
    assert "lcnn_audit._version" in g["lcnn_audit.results"]  # from ._version import __version__
    assert g["lcnn_audit"] == {"lcnn_audit._version"}  # the root stays lazy (PEP 562 __getattr__)
    assert "lcnn_audit.errors" in g["lcnn_audit.rng"]
    assert "lcnn_audit.cli.commands" in g["lcnn_audit.cli._app"]  # from . import commands (after code)
    assert "lcnn_audit.rng" in g["lcnn_audit.attacks.pgd"]  # from .. import rng: the submodule
    assert "lcnn_audit.attacks" not in g["lcnn_audit.attacks.pgd"]  # its own package is no edge


def test_no_module_imports_names_from_the_package_root():
    """``from . import __version__`` in results.py made 22 modules one cycle through an eager
    root (issue 13); names now come from the module that defines them."""
    files = module_files()
    offenders = []
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level and name != PACKAGE:
                base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                if mod == PACKAGE:
                    offenders += [f"{name}: {a.name}" for a in node.names if f"{PACKAGE}.{a.name}" not in files]
    assert not offenders


def test_cyclic_groups_oracle():
    g = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}, "e": {"a"}}
    assert cyclic_groups(g) == [{"a", "b"}, {"c", "d"}]
    assert cyclic_groups({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"a"}}, ["a", "a"]),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set(), "d": {"e"}, "e": {"d"}}, ["d", "e", "d"]),
])
def test_find_cycle_oracle(graph, cycle):
    assert find_cycle(graph) == cycle


def test_graph_reports_a_planted_cycle(tmp_path):
    """The checker itself can fail: a two-module package importing each other at top level."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from .a import thing\n\ndef f():\n    from . import c\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    g = import_graph(module_files(pkg, "pkg"))
    assert g["pkg.b"] == {"pkg.a"} and g["pkg.c"] == set()
    assert find_cycle(g) == ["pkg.a", "pkg.b", "pkg.a"]


def test_graph_reports_a_cycle_closed_inside_a_function(tmp_path):
    """A function-level import that dodges a cycle is invisible to the module-level graph and
    caught by the all-imports one."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from .high import g  # dodges the cycle\n    return g\n")
    (pkg / "high.py").write_text("from .low import f\n\ndef g():\n    return f\n")
    files = module_files(pkg, "pkg")
    assert find_cycle(import_graph(files)) is None
    assert find_cycle(import_graph(files, all_imports=True)) == ["pkg.high", "pkg.low", "pkg.high"]
