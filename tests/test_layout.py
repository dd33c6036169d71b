"""The package's shape: no import cycle between minifal's modules, a reason on every long module,
and a docstring on every top-level folder saying what lives there and what may import it."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minifal"
MAX_LINES = 400
LONG_REASON = "long because"
"""The phrase a module's docstring uses to say why it is over ``MAX_LINES`` lines."""

KNOWN_CYCLES: list[set[str]] = []
KNOWN_LONG: set[str] = set()


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def module_files() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere (top level, functions, branches):
    ``from a import b`` counts ``a.b`` when it is a module, else ``a``."""

    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            found.update(filter(None, (known(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                target = submodule if submodule in modules else known(source)
                if target is not None:
                    found.add(target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components of more than one module (each holds at least one cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(component)

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return components


def cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """One cycle through the component, as a path that ends where it starts."""
    start = min(component)
    previous = {start: start}
    frontier = [start]
    while frontier:  # breadth first, inside the component, back to ``start``
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in {component}")


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    source = tmp_path / "minifal" / "a.py"
    source.parent.mkdir()
    source.write_text("def f():\n    from minifal import b\n    from . import c\n")
    modules = {"minifal.a": source, "minifal.b": source, "minifal.c": source, "minifal": source}
    assert imported_modules("minifal.a", source, modules) == {"minifal.b", "minifal.c"}


def test_a_cycle_is_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    (component,) = strongly_connected(graph)
    assert component == {"a", "b", "c"}
    assert cycle_in(component, graph) == ["a", "b", "c", "a"]


def test_no_import_cycle_between_minifal_modules() -> None:
    graph = import_graph()
    assert "minifal.fleet.gateway" in graph and graph["minifal.runner.server"]  # it parsed
    cycles = [
        " -> ".join(cycle_in(component, graph))
        for component in strongly_connected(graph)
        if component not in KNOWN_CYCLES
    ]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@functools.cache
def bound_names(path: Path) -> set[str] | None:
    """The names a module binds at its top level (in ``if``/``try`` blocks too); None when it
    may answer any name (a module ``__getattr__``, a star import)."""
    names: set[str] = set()
    body = list(parsed(path).body)
    while body:
        node = body.pop()
        if isinstance(node, (ast.If, ast.Try)):
            body += node.body + node.orelse
            body += getattr(node, "finalbody", [])
            for handler in getattr(node, "handlers", []):
                body += handler.body
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return None  # ``from x import *``: whatever x has
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return None if "__getattr__" in names else names


def test_every_import_of_minifal_names_something_that_exists() -> None:
    """In the package and in tests, scripts, benchmarks and apps: a moved module or name is
    an error here, not at the first run of the branch that imports it."""
    modules = module_files()
    problems = []
    for folder in ("minifal", "tests", "scripts", "benchmarks", "apps"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(parsed(path)):
                if isinstance(node, ast.Import):
                    wanted = [(alias.name, None) for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    wanted = [(node.module, alias.name) for alias in node.names]
                else:
                    continue
                for module, name in wanted:
                    if module.split(".")[0] != "minifal":
                        continue
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    if module not in modules:
                        problems.append(f"{where}: no module {module}")
                    elif name not in (None, "*") and f"{module}.{name}" not in modules:
                        names = bound_names(modules[module])
                        if names is not None and name not in names:
                            problems.append(f"{where}: {module} has no {name}")
    assert not problems, "\n".join(problems)


def test_a_module_over_400_lines_says_why() -> None:
    unexplained = []
    for path in module_files().values():
        relative = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        if lines <= MAX_LINES or relative in KNOWN_LONG:
            continue
        docstring = ast.get_docstring(parsed(path)) or ""
        if LONG_REASON not in docstring.lower():
            unexplained.append(f"{relative}: {lines} lines")
    assert not unexplained, (
        f"split these, or say in the module's docstring why each is {LONG_REASON} ...:\n"
        + "\n".join(unexplained)
    )


def test_each_top_level_folder_says_what_lives_there_and_who_imports_it() -> None:
    missing = []
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
        if "import" not in docstring.lower() or len(docstring.splitlines()) < 2:
            missing.append(init.relative_to(ROOT).as_posix())
    assert not missing, "a docstring: what lives there, and what may import it:\n" + "\n".join(
        missing
    )
