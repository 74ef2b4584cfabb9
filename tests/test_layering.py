"""The import graph, read from the source: the four top-level packages keep their one-way layering
(service -> export -> adapters -> models), and inside `service/` no package imports one that imports it back,
so a newcomer can read the tree from the bottom (core) up (api, commands)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["models", "adapters", "export", "service"]  # each may import only those before it


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (a lazy import is still a dependency)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str, depth: int) -> str:
    return ".".join(module.split(".")[:depth])


def package_graph(top: str, depth: int) -> dict[str, set[str]]:
    """package -> the packages its files import, at `depth` dotted parts (1: top level, 2: service.X)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in (ROOT / top).rglob("*.py"):
        source = module_name(path)
        if len(source.split(".")) <= depth - 1:
            continue  # the package's own __init__ at the level above
        for target in imports_of(path):
            if target.split(".")[0] in LAYERS and len(target.split(".")) >= depth:
                a, b = package_of(source, depth), package_of(target, depth)
                if a != b:
                    graph[a].add(b)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The pairs (and longer rings) of packages that reach each other."""
    found = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    found.append(path)
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return found


def test_top_level_packages_import_only_the_layers_below() -> None:
    wrong = []
    for layer in LAYERS:
        allowed = set(LAYERS[: LAYERS.index(layer) + 1])
        for target in package_graph(layer, 1).get(layer, set()):
            if target not in allowed:
                wrong.append(f"{layer} imports {target}")
    assert not wrong, wrong


def test_no_package_of_service_imports_one_that_imports_it_back() -> None:
    rings = cycles(package_graph("service", 2))
    assert not rings, "\n".join(" -> ".join([*ring, ring[0]]) for ring in rings)
