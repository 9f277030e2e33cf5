"""The architecture holds: the core imports no plugin, plugins use only the public core,
and no package has an import cycle (function-level imports count; imports for type
checking only do not, since they never run)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PACKAGES = ("consist_spatial", "consist_topological", "consist_semantic")
PACKAGE_DIRS = {
    "consist": ROOT / "consist",
    "consist_spatial": ROOT / "plugins" / "spatial" / "consist_spatial",
    "consist_topological": ROOT / "plugins" / "topological" / "consist_topological",
    "consist_semantic": ROOT / "plugins" / "semantic" / "consist_semantic",
}


def _modules(pkg: str) -> dict[str, Path]:
    base = PACKAGE_DIRS[pkg]
    out = {}
    for path in sorted(base.rglob("*.py")):
        parts = [pkg, *path.relative_to(base).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """``(imported module, names, line)`` of every import that can run (module level or
    inside functions; not under ``if TYPE_CHECKING``), relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, [], child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                out.append((base, [a.name for a in child.names], child.lineno))
            visit(child)

    visit(tree)
    return out


def _edges(pkg: str) -> dict[str, set[str]]:
    mods = _modules(pkg)
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for target, names, _line in _imports(name, path):
            candidates = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods] or [target]
            for cand in candidates:
                while cand and cand not in mods:
                    cand = cand.rpartition(".")[0]
                # a module importing its own package's __init__ would always form a loop
                # with an __init__ that re-exports it: only the package root counts, and
                # only when the importer is not the root itself
                if (cand and cand != name and not name.startswith(cand + ".")) or (cand == pkg and name != pkg):
                    graph[name].add(cand)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph``, or None (iterative DFS with colours)."""
    colour: dict[str, int] = {}
    for start in sorted(graph):
        if colour.get(start):
            continue
        stack = [(start, iter(sorted(graph.get(start, ()))))]
        path = [start]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            if colour.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not colour.get(nxt):
                colour[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
    return None


def test_the_core_imports_no_plugin_not_even_lazily():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {target}" for name, path in _modules("consist").items() for target, _names, line in _imports(name, path) if target.split(".")[0] in PLUGIN_PACKAGES
    ]
    assert not offenders, offenders


#: Core modules a plugin may import: the contracts and what docs/plugins.md documents.
PUBLIC_CORE = {
    "consist",
    "consist.contracts",
    "consist.contracts.checker",
    "consist.contracts.evidence",
    "consist.contracts.features",
    "consist.contracts.hookspecs",
    "consist.contracts.reporter",
    "consist.contracts.retrieval",
    "consist.contracts.store",
    "consist.records",
    "consist.errors",
    "consist.features",
    "consist.images",
    "consist.options",
    "consist.plugins",
    "consist.datasets",
    "consist.aliases",
    "consist.recognizer",
    "consist.adapt",
    "consist.metrics.retrieval",
    "consist.metrics.pixel",
    "consist.stores.derived",
    "consist.cli.common",
    "consist.cli.feedback",
}


#: (imported package, importer): declared plugin-on-plugin dependencies. None: a plugin
#: takes what another one offers through the registries and contracts only.
DECLARED_PLUGIN_DEPENDENCIES: set[tuple[str, str]] = set()


@pytest.mark.parametrize("pkg", PLUGIN_PACKAGES)
def test_plugins_use_only_the_public_core_and_no_other_plugin(pkg):
    offenders = []
    for name, path in _modules(pkg).items():
        for target, _names, line in _imports(name, path):
            top = target.split(".")[0]
            if top == "consist" and target not in PUBLIC_CORE:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports non-public {target}")
            if top in PLUGIN_PACKAGES and top != pkg and (target, pkg) not in DECLARED_PLUGIN_DEPENDENCIES:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports another plugin, {target}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("pkg", sorted(PACKAGE_DIRS))
def test_no_import_cycle(pkg):
    cycle = _cycle(_edges(pkg))
    assert cycle is None, " -> ".join(cycle or [])
