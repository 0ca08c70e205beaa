"""Writes the editor (UI-format) twin of an API-format workflow, laid out left to right.

    python -m tools.api_to_ui workflows/inpaint_api.json workflows/inpaint.json

Node ids stay the same. Nodes are placed in columns by their depth in the graph (loaders
on the left, savers on the right); ``widgets_values`` follow each node's widget inputs in
declaration order (with the "fixed" entry after a seed and "image" after an upload combo),
so ``graph.ui_format`` converts the result back to the same API workflow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from graph import build_registry
from graph.registry import NodeRegistry

COLUMN_WIDTH, NODE_WIDTH, ROW_GAP, MARGIN = 360, 315, 40, 40


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _depths(api: dict[str, Any]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(node_id: str, trail: frozenset[str]) -> int:
        if node_id in depth:
            return depth[node_id]
        if node_id in trail:
            raise ValueError(f"cycle through node {node_id}")
        parents = [v[0] for v in api[node_id]["inputs"].values() if _is_link(v)]
        depth[node_id] = 1 + max((visit(p, trail | {node_id}) for p in parents), default=-1)
        return depth[node_id]

    for node_id in api:
        visit(node_id, frozenset())
    return depth


def api_to_ui(api: dict[str, Any], registry: NodeRegistry) -> dict[str, Any]:
    """The UI-format document for an API-format workflow (node ids must be integers as strings)."""
    depths = _depths(api)
    links: list[list[Any]] = []
    nodes: dict[str, dict[str, Any]] = {}
    column_bottom: dict[int, int] = {}
    order = sorted(api, key=lambda n: (depths[n], int(n)))
    for position, node_id in enumerate(order):
        spec = api[node_id]
        definition = registry.get(spec["class_type"])
        if definition is None:
            raise ValueError(f"unknown node type {spec['class_type']}")
        widgets: list[Any] = []
        for name in definition.widget_names:
            inp = definition.inputs[name]
            value = spec["inputs"].get(name, inp.default)
            if _is_link(value):
                raise ValueError(f"node {node_id}: linked widget inputs are not supported by this tool")
            widgets.append(value)
            if inp.control_after_generate:
                widgets.append("fixed")
            elif inp.image_upload:
                widgets.append("image")
        inputs = [{"name": name, "type": inp.type, "link": None}
                  for name, inp in definition.inputs.items() if not inp.is_widget]
        height = 46 + 26 * (len(inputs) + len(widgets))
        column = depths[node_id]
        top = column_bottom.get(column, MARGIN)
        column_bottom[column] = top + height + ROW_GAP
        nodes[node_id] = {
            "id": int(node_id), "type": spec["class_type"], "pos": [MARGIN + column * COLUMN_WIDTH, top],
            "size": [NODE_WIDTH, height], "flags": {}, "order": position, "mode": 0,
            "inputs": inputs,
            "outputs": [{"name": out.name, "type": out.type, "links": [], "slot_index": slot}
                        for slot, out in enumerate(definition.outputs)],
            "properties": {"Node name for S&R": spec["class_type"]},
            "widgets_values": widgets,
        }
        if spec.get("_meta", {}).get("title"):
            nodes[node_id]["title"] = spec["_meta"]["title"]
    for node_id in order:
        for slot, entry in enumerate(nodes[node_id]["inputs"]):
            value = api[node_id]["inputs"].get(entry["name"])
            if not _is_link(value):
                continue
            source, source_slot = value
            link_id = len(links) + 1
            link_type = nodes[source]["outputs"][source_slot]["type"]
            links.append([link_id, int(source), source_slot, int(node_id), slot, link_type])
            entry["link"] = link_id
            nodes[source]["outputs"][source_slot]["links"].append(link_id)
    return {
        "last_node_id": max(int(n) for n in api), "last_link_id": len(links),
        "nodes": [nodes[n] for n in order], "links": links, "groups": [], "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    api = json.loads(Path(argv[0]).read_text())
    ui = api_to_ui(api, build_registry("nodes", None))
    Path(argv[1]).write_text(json.dumps(ui, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
