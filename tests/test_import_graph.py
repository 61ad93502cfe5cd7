"""The package's modules import each other without cycles, function-level imports included."""

import ast
from pathlib import Path

import rewriting

PACKAGE_ROOT = Path(rewriting.__file__).parent
PACKAGE = "rewriting"


def module_names(root: Path = PACKAGE_ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module under root by dotted name; a package is named by its __init__."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _absolute(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The dotted name a possibly relative `from ... import` refers to."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    # A package's own __init__ is its level-1 anchor; a module's is its parent package.
    base = base[: len(base) - level + (1 if is_package else 0)]
    return ".".join(base + ([module] if module else []))


def imported_modules(importer: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that importer imports anywhere in its source, at any depth."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, importer, is_package)
            # `from package import submodule` imports the submodule; other names come from base itself.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` of an unknown leaf still binds the nearest known module.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != importer:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module name -> the package's modules it imports."""
    modules = module_names()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None; depth-first search with an explicit stack."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in sorted(graph):
        if root in state:
            continue
        path = [root]
        stack = [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_sees_relative_absolute_and_function_level_imports():
    graph = import_graph()
    assert "rewriting.models.loading" in graph["rewriting.models"]  # `from .loading import ...` in a package
    assert "rewriting.metrics.fid" in graph["rewriting.metrics.edit_metric_sums"]  # `from rewriting.metrics import fid`
    assert "rewriting.toytown.labels" in graph["rewriting.metrics.evaluate"]  # imported inside a function


def test_a_cycle_is_found_and_named(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import thing\n")
    (package / "b.py").write_text("def f():\n    from pkg import c\n")
    (package / "c.py").write_text("import pkg.a\n")
    modules = module_names(package, "pkg")
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (package / "c.py").write_text("")
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert find_cycle(graph) is None
