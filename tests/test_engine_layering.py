"""graph/ is the engine: it imports no torch, aiohttp, nodes or server code, and its modules
import each other without a circle (docs/ARCHITECTURE.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

GRAPH = Path(__file__).resolve().parent.parent / "graph"
FORBIDDEN = ("torch", "aiohttp", "nodes", "latentgraph_server", "server", "diffusers", "transformers")


def _imports() -> dict[str, set[str]]:
    """Every module graph/ imports, per graph module, wherever the import statement is."""
    found: dict[str, set[str]] = {}
    for path in sorted(GRAPH.glob("*.py")):
        module = "graph" if path.stem == "__init__" else f"graph.{path.stem}"
        names = found.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return found


def test_graph_imports_no_torch_aiohttp_nodes_or_server():
    offending = {module: sorted(n for n in names if n.split(".")[0] in FORBIDDEN)
                 for module, names in _imports().items()}
    assert {m: n for m, n in offending.items() if n} == {}


def test_graph_modules_import_each_other_without_a_circle():
    dependencies = nx.DiGraph()
    for module, names in _imports().items():
        if module == "graph":  # the package re-exports its modules; they never import it
            continue
        dependencies.add_edges_from((module, name) for name in names if name.startswith("graph.") and name != module)
    assert list(nx.simple_cycles(dependencies)) == []


def test_the_engine_modules_import_the_package_only_through_their_own_modules():
    # ``from graph import X`` inside graph/ would make the package and that module a circle.
    assert {m for m, names in _imports().items() if m != "graph" and "graph" in names} == set()
