"""The import graph of ``hpcplat/`` and ``node_agent/`` follows the layering of the architecture.

The graph is read from the source (``ast``), not from a running interpreter: EVERY ``import`` and
``from ... import`` counts, at module level, inside a function or under ``if TYPE_CHECKING:`` —
an import moved into a function still makes a cycle, it only hides it. Packages and modules are
found by walking the tree, so moving a module changes what is checked, not the test.

Dependencies point down (``docs/architecture.md``): cli → submission → catalog → provenance/spec →
slurm → the ground floor (``hpcplat``'s top-level modules that import no hpcplat package:
errors, runner, siteconfig, ...). ``hpcplat.job`` runs inside jobs and ``node_agent`` on compute
nodes: both stay off the catalog, the submission layer and the ORM.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TREES = ("hpcplat", "node_agent")
ORM = ("sqlalchemy", "sqlmodel", "alembic", "psycopg")

KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {
    ("hpcplat.job", "hpcplat.catalog"): (
        "the tracking SDK (job/track.py) writes metrics to the catalog database itself, or to the "
        "catalog's spool format; goes away when the job reports to the server (issue 10, item 1)"
    ),
    ("hpcplat.job", "sqlalchemy"): "the same: job/track.py opens the catalog database",
    ("node_agent", "hpcplat.catalog"): (
        "node_agent/reporter.py sends usage with Catalog (SQLModel) from a short-lived subprocess; "
        "goes away when the agent reports to the server"
    ),
    ("node_agent", "sqlalchemy"): "the same: node_agent/reporter.py catches SQLAlchemy's errors",
}
"""(importing package, imported package or ORM library) pairs the layering forbids that the tree
still has, and why. A pair that no longer occurs must be removed from here (the test says so)."""


@dataclass(frozen=True)
class Import:
    source: str
    """The importing module (``hpcplat.catalog.service``)."""
    target: str
    """The imported module, as precise as the tree allows (``hpcplat.catalog.store``), or the
    external name as written (``sqlalchemy.orm``)."""
    type_only: bool
    """Under ``if TYPE_CHECKING:``."""
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


@cache
def modules() -> dict[str, Path]:
    """Every module of the trees by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for tree in TREES:
        for path in sorted((REPO / tree).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for inner in ast.walk(child):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        lines.add(inner.lineno)
    return lines


@cache
def imports() -> tuple[Import, ...]:
    known = modules()
    out: list[Import] = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        type_only = _type_checking_lines(tree)
        package = name if _is_package(name) else name.rpartition(".")[0]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                # ``from pkg import mod`` imports the module ``pkg.mod``; ``from mod import name``
                # imports ``mod``.
                targets = [
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                    for alias in node.names
                ]
            for target in targets:
                out.append(Import(name, target, node.lineno in type_only, node.lineno))
    return tuple(out)


def internal(items: Iterable[Import]) -> Iterator[Import]:
    return (i for i in items if i.target in modules() and i.target != i.source)


def unit(module: str) -> str:
    """The package a module belongs to: ``hpcplat.catalog`` for ``hpcplat.catalog.service``, the
    module itself for a top-level module (``hpcplat.runner``, ``node_agent.agent``)."""
    parts = module.split(".")
    if len(parts) >= 2 and _is_package(".".join(parts[:2])):
        return ".".join(parts[:2])
    return module if len(parts) <= 2 else ".".join(parts[:2])


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@cache
def ground_floor() -> frozenset[str]:
    """``hpcplat``'s top-level modules that import, from hpcplat, only each other."""
    top = {m for m in modules() if m.count(".") == 1 and m.startswith("hpcplat.") and not _is_package(m)}
    deps: dict[str, set[str]] = {m: set() for m in top}
    for i in internal(imports()):
        if i.source in top and _within(i.target, "hpcplat"):
            deps[i.source].add(i.target)
    ground = set(top)
    changed = True
    while changed:
        changed = False
        for m in list(ground):
            if not deps[m] <= ground:
                ground.discard(m)
                changed = True
    return frozenset(ground)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def _graph(edges: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
        graph.setdefault(target, set())
    return graph


def _explain(graph_imports: Iterable[Import], component: list[str], key: Callable[[str], str]) -> str:
    members = set(component)
    shown = [str(i) for i in graph_imports if key(i.source) in members and key(i.target) in members]
    return " <-> ".join(component) + ":\n    " + "\n    ".join(sorted(shown))


# -- the graph is what the tree says ------------------------------------------------------------


def test_the_graph_sees_function_local_and_type_only_imports() -> None:
    found = {(i.source, i.target, i.type_only) for i in imports()}
    # hpcplat/catalog/__init__.py names its lazy exports under TYPE_CHECKING
    assert ("hpcplat.catalog", "hpcplat.catalog.service", True) in found
    # hpcplat/catalog/listing.py imports SQLAlchemy inside list_runs only
    assert ("hpcplat.catalog.listing", "sqlalchemy", False) in found
    # relative and ``from package import module`` forms resolve to the module
    assert ("hpcplat.catalog.service", "hpcplat.catalog.store", False) in found
    assert ground_floor() >= {"hpcplat.errors", "hpcplat.runner", "hpcplat.siteconfig"}
    assert unit("hpcplat.catalog.migrations.env") == "hpcplat.catalog"
    assert unit("hpcplat.runner") == "hpcplat.runner"


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles(_graph([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])) == [["a", "b", "c"]]
    assert _cycles(_graph([("a", "b"), ("b", "c")])) == []


# -- no cycles ----------------------------------------------------------------------------------


def test_top_level_packages_import_their_exports_lazily() -> None:
    """``hpcplat/__init__.py`` and ``node_agent/__init__.py`` import nothing of theirs when run
    (their exports load by name on first use), so any module may read ``hpcplat.__version__``
    without a cycle; the cycle checks below leave them out for that reason."""
    eager = [i for i in internal(imports()) if i.source in TREES and not i.type_only]
    assert not eager, "\n".join(map(str, eager))


def _without_facades() -> list[Import]:
    return [i for i in internal(imports()) if i.source not in TREES and i.target not in TREES]


def test_no_cycle_between_packages() -> None:
    edges = [i for i in _without_facades() if unit(i.source) != unit(i.target)]
    cycles = _cycles(_graph((unit(i.source), unit(i.target)) for i in edges))
    assert not cycles, "package cycles:\n" + "\n".join(_explain(edges, c, unit) for c in cycles)


def test_no_cycle_between_modules() -> None:
    """Within a package too: the catalog's service, reconcile and self-registration once needed
    each other through function-local imports."""
    edges = _without_facades()
    cycles = _cycles(_graph((i.source, i.target) for i in edges))
    assert not cycles, "module cycles:\n" + "\n".join(_explain(edges, c, lambda m: m) for c in cycles)


# -- layering -----------------------------------------------------------------------------------


def _packages(tree: str) -> set[str]:
    return {unit(m) for m in modules() if _within(m, tree) and m != tree}


def _rules() -> list[tuple[str, str, str]]:
    """(importer prefix, forbidden prefix, why) from the tree as it is now."""
    rules: list[tuple[str, str, str]] = []
    hpcplat_units = _packages("hpcplat")
    allowed_below = {
        "hpcplat.slurm": {"hpcplat.slurm"},
        "hpcplat.catalog": {"hpcplat.catalog", "hpcplat.slurm", "hpcplat.spec", "hpcplat.provenance"},
    }
    for layer, allowed in allowed_below.items():
        for other in sorted(hpcplat_units - allowed - ground_floor()):
            rules.append((layer, other, f"{layer} may import only {sorted(allowed)} and the ground floor"))
    for other in sorted(hpcplat_units - {"hpcplat.slurm"} - ground_floor()):
        rules.append(("node_agent", other, "node_agent may import only hpcplat.slurm and the ground floor"))
    if "hpcplat.job" in hpcplat_units:
        why = "hpcplat.job runs inside jobs: only the ground floor and Slurm parsing"
        for other in sorted(hpcplat_units - {"hpcplat.job", "hpcplat.slurm"} - ground_floor()):
            rules.append(("hpcplat.job", other, why))
        parse = "hpcplat.slurm.parse"
        if any(_within(m, parse) for m in modules()):
            for m in sorted(modules()):
                if _within(m, "hpcplat.slurm") and m != "hpcplat.slurm" and not _within(m, parse):
                    rules.append(("hpcplat.job", m, why))
    return rules


def _violations() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for importer, forbidden, why in _rules():
        for i in internal(imports()):
            if _within(i.source, importer) and _within(i.target, forbidden):
                found.setdefault((importer, unit(i.target)), []).append(f"{i}  ({why})")
    for tree in ("node_agent", "hpcplat.job"):  # compute-node code: no ORM, no database driver
        for i in imports():
            top = i.target.split(".")[0]
            if _within(i.source, tree) and top in ORM:
                found.setdefault((tree, top), []).append(f"{i}  ({tree} runs on compute nodes: no ORM)")
    return found


def test_layers_import_only_downwards() -> None:
    found = _violations()
    new = {k: v for k, v in found.items() if k not in KNOWN_VIOLATIONS}
    assert not new, "imports against the layering:\n" + "\n".join(line for v in new.values() for line in v)


def test_known_violations_are_still_there() -> None:
    """An entry of KNOWN_VIOLATIONS whose import is gone must go too (so the list only shrinks)."""
    stale = sorted(set(KNOWN_VIOLATIONS) - set(_violations()))
    assert not stale, f"remove from KNOWN_VIOLATIONS, fixed: {stale}"
