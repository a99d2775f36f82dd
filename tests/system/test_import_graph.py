"""The package's import graph: no cycles, and no module reaching into another's private names.

Read from the source (every import, at any depth, `TYPE_CHECKING` blocks and imports inside
functions included: a lazy import only hides a cycle), so that a cycle fails here, by name,
rather than as an `ImportError` in whichever order a user happens to import things.
"""

from __future__ import annotations

import ast
from pathlib import Path

import multitask

PACKAGE = Path(multitask.__file__).parent


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for every import of `multitask` in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in MODULES:
                    found.append((submodule, None))
                else:
                    found.append((target, alias.name))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, None) for alias in node.names)
    return [(target, taken) for target, taken in found if target in MODULES]


def _graph() -> dict[str, set[str]]:
    return {
        name: {target for target, _ in _imports(name, path)} - {name}
        for name, path in MODULES.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names() -> None:
    reaching = [
        f"{name} imports {taken} from {target}"
        for name, path in MODULES.items()
        for target, taken in _imports(name, path)
        if taken is not None and taken.startswith("_") and not taken.startswith("__")
    ]
    assert reaching == []


def test_the_graph_is_read() -> None:
    """The reader sees relative imports at every depth (else the tests above prove nothing)."""
    graph = _graph()
    assert "multitask._engine" in graph["multitask._client"]
    assert "multitask._sse" in graph["multitask._providers._base"]
    assert "multitask._engine" in graph["multitask._many"]
