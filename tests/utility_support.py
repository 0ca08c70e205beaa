"""Helpers for the utility-node tests: ComfyUI's saved template workflows, stand-in
source nodes for their links, and a node that captures values for the test to read."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from graph import Executor, Folders, Input, Node, NodeRegistry, Output, build_registry, prepare
from nodes.sd.runtime import Runtime

CAPTURED: dict[str, list[Any]] = {}


class Capture(Node):
    """Test-only output node: keeps every value it receives under ``key``."""

    node_name = "TestCapture"
    output_node = True
    not_deterministic = True
    value = Input("*")
    key = Input("STRING", default="")

    def execute(self, value: Any, key: str) -> tuple:
        CAPTURED.setdefault(key, []).append(value)
        return ()


@cache
def source_node(type_name: str) -> type[Node]:
    """A node with one output of ``type_name`` that stands in for a link's real source."""
    return type(f"Source_{len(type_name)}", (Node,), {
        "node_name": f"TestSource[{type_name}]",
        "outputs": (Output(type_name),),
        "__module__": __name__,
    })


def make_registry() -> NodeRegistry:
    registry = build_registry("nodes", None)
    registry.register(Capture)
    return registry


def templates_folder() -> Path | None:
    """The template workflows of the ``comfyui-workflow-templates-json`` package, if installed."""
    try:
        import comfyui_workflow_templates_json
    except ImportError:
        return None
    return Path(comfyui_workflow_templates_json.__file__).parent / "templates"


@cache
def saved_nodes(node_types: frozenset[str]) -> tuple[tuple[str, dict], ...]:
    """Every node of ``node_types`` in ComfyUI's saved templates, top level and inside
    subgraph definitions, as ``(file name, node)``."""
    folder = templates_folder()
    found = []
    for path in sorted(folder.glob("*.json")) if folder else ():
        document = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            continue
        graphs = [document, *((document.get("definitions") or {}).get("subgraphs") or [])]
        for graph in graphs:
            for node in graph.get("nodes") or []:
                if isinstance(node, dict) and node.get("type") in node_types:
                    found.append((path.name, node))
    return tuple(found)


def isolate(node: dict) -> tuple[dict, list[type[Node]]]:
    """A UI-format document holding only ``node`` (as id 1, active), each of its linked
    inputs fed by a stand-in source of the link's type. Returns it and the source classes."""
    node = copy.deepcopy(node)
    node["id"], node["mode"] = 1, 0
    nodes, links, sources = [node], [], []
    for slot, entry in enumerate(node.get("inputs") or []):
        if entry.get("link") is None:
            continue
        cls = source_node(entry.get("type") or "*")
        sources.append(cls)
        source_id, link_id = 1000 + slot, 2000 + slot
        nodes.append({"id": source_id, "type": cls.node_name, "mode": 0, "inputs": [],
                      "outputs": [{"name": "out", "type": entry.get("type"), "links": [link_id]}]})
        links.append([link_id, source_id, 0, 1, slot, entry.get("type")])
        entry["link"] = link_id
    return {"nodes": nodes, "links": links}, sources


def run(registry: NodeRegistry, document: dict, tmp_path: Path, targets: list[str] | None = None):
    """Validates (asserting it is valid) and runs an API-format document."""
    folders = Folders.under(tmp_path)
    for folder in (folders.input, folders.output, folders.temp):
        folder.mkdir(parents=True, exist_ok=True)
    runtime = Runtime(folders=folders)
    checked = prepare(document, registry, targets, runtime=runtime)
    assert checked.ok, checked.response()
    return Executor(folders=folders, runtime=runtime).execute(checked.plan)


def captured(key: str) -> Any:
    """The last value the capture node ``key`` received."""
    return CAPTURED[key][-1]


def iter_inputs(node: dict) -> Iterator[tuple[str, Any]]:
    for entry in node.get("inputs") or []:
        widget = entry.get("widget")
        yield (widget["name"] if isinstance(widget, dict) else entry.get("name")), entry.get("link")
