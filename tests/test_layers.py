"""The package's import graph has no cycles: each module can be read, tested and replaced from the bottom up.

Edges come from the source (`ast`), not from running it: every `import robusthyper...` and
`from robusthyper... import ...` anywhere in a module counts, function-level (lazy) imports included, because
a lazy import still ties the two modules together. Imports under `if TYPE_CHECKING:` are excluded: they
never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
Graph = dict[str, set[str]]


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `package` (a folder under `root`)."""
    files = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """The modules of the package that one module imports (see the module docstring for what counts)."""

    def __init__(self, name: str, is_package: bool, modules: set[str], package: str) -> None:
        self.here = name if is_package else name.rpartition(".")[0]
        self.modules = modules
        self.package = package
        self.found: set[str] = set()

    def _add(self, target: str) -> None:
        # `import a.b.c` binds the deepest module that exists; anything outside the package is ignored
        while target and target not in self.modules:
            target = target.rpartition(".")[0]
        if target == self.package or target.startswith(self.package + "."):
            self.found.add(target)

    def visit_If(self, node: ast.If) -> None:
        body = node.orelse if _is_type_checking(node.test) else [*node.body, *node.orelse]
        for child in body:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.here
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        for alias in node.names:
            self._add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in self.modules else base)


def import_graph(root: Path, package: str) -> Graph:
    """Module -> the package's modules it imports (self-imports dropped)."""
    files = module_files(root, package)
    graph: Graph = {}
    for name, path in files.items():
        visitor = _Imports(name, path.name == "__init__.py", set(files), package)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        graph[name] = visitor.found - {name}
    return graph


def knots(graph: Graph) -> list[set[str]]:
    """The strongly connected components of two or more modules (Tarjan's algorithm): every module of one
    imports every other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle (modules, the first repeated last) per knot, so that a failure names every knot at once."""
    return [cycle_in(graph, component) for component in knots(graph)]


def cycle_in(graph: Graph, component: set[str]) -> list[str]:
    """A shortest path back to the first module of a strongly connected component, through its members."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{sorted(component)} is not strongly connected")  # cannot happen


def test_robusthyper_has_no_import_cycle() -> None:
    graph = import_graph(ROOT, "robusthyper")
    assert "robusthyper.posteriors.base" in graph  # the walk saw the package
    found = knots(graph)
    assert not found, "import cycles:\n" + "\n".join(
        f"{' -> '.join(cycle_in(graph, knot))}  (a knot of {len(knot)}: {', '.join(sorted(knot))})"
        for knot in found
    )


def test_the_checker_finds_a_cycle(tmp_path: Path) -> None:
    """A synthetic package: a -> b at module level, b -> a inside a function (relative), c -> a only for
    type checkers. The checker must report a <-> b, and nothing through c."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\nimport os\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n    return x\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nfrom pkg import a\nif TYPE_CHECKING:\n    from pkg import c\n"
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]

    lazy = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import x\n"
    (pkg / "sub" / "b.py").write_text(lazy)
    assert cycles(import_graph(tmp_path, "pkg")) == []
