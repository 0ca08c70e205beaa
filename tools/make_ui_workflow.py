"""Write the UI-format (editor) version of an API-format workflow, using the node declarations.

    python tools/make_ui_workflow.py workflows/lora_api.json            # -> workflows/lora.json
    python tools/make_ui_workflow.py IN_api.json OUT.json

The result has what the editor saves (COMPAT.md): ``nodes`` with ``inputs`` (linked inputs,
and widgets fed by a link as ``widget`` entries), ``outputs`` with their ``links``,
positional ``widgets_values`` (a "fixed" entry after each ``control_after_generate``
input, "image" after an ``image_upload`` input), the ``links`` table, and the layout: one
column per graph depth. ``graph.ui_format`` converts it back to the same API workflow.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from graph import NodeRegistry, build_registry  # noqa: E402


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _depths(api: dict[str, Any]) -> dict[str, int]:
    depths: dict[str, int] = {}

    def depth(node_id: str, seen: tuple[str, ...] = ()) -> int:
        if node_id not in depths:
            parents = [v[0] for v in api[node_id]["inputs"].values() if _is_link(v) and v[0] not in seen]
            depths[node_id] = 1 + max((depth(p, (*seen, node_id)) for p in parents), default=-1)
        return depths[node_id]

    for node_id in api:
        depth(node_id)
    return depths


def api_to_ui(api: dict[str, Any], registry: NodeRegistry) -> dict[str, Any]:
    """The UI-format document for an API-format workflow with integer-like node ids."""
    depths = _depths(api)
    order = sorted(api, key=lambda n: (depths[n], int(n)))
    nodes: dict[str, dict[str, Any]] = {}
    rows: dict[int, int] = {}
    for index, node_id in enumerate(order):
        spec = api[node_id]
        definition = registry.get(spec["class_type"])
        if definition is None:
            raise SystemExit(f"node {node_id}: unknown type {spec['class_type']}")
        widgets: list[Any] = []
        inputs: list[dict[str, Any]] = []
        for name, inp in definition.inputs.items():
            value = spec["inputs"].get(name)
            if inp.is_widget:
                widgets.append(inp.default if value is None or _is_link(value) else value)
                if inp.control_after_generate:
                    widgets.append("fixed")
                if inp.image_upload:
                    widgets.append("image")
                if _is_link(value):
                    inputs.append({"name": name, "type": inp.type, "link": None, "widget": {"name": name}})
            elif not inp.hidden and (value is not None or not inp.optional):
                inputs.append({"name": name, "type": inp.type, "link": None})
        row = rows.get(depths[node_id], 0)
        rows[depths[node_id]] = row + 1
        node: dict[str, Any] = {
            "id": int(node_id), "type": spec["class_type"], "pos": [40 + 340 * depths[node_id], 40 + 260 * row],
            "size": [300, 100 + 26 * len(widgets)], "flags": {}, "order": index, "mode": 0, "inputs": inputs,
            "outputs": [{"name": out.name, "type": out.type, "links": [], "slot_index": slot}
                        for slot, out in enumerate(definition.outputs)],
            "properties": {"Node name for S&R": spec["class_type"]}, "widgets_values": widgets,
        }
        title = (spec.get("_meta") or {}).get("title")
        if title:
            node["title"] = title
        nodes[node_id] = node
    links: list[list[Any]] = []
    for node_id in order:
        for slot, entry in enumerate(nodes[node_id]["inputs"]):
            value = api[node_id]["inputs"].get(entry["name"])
            if not _is_link(value):
                continue
            source, source_slot = value
            link_id = len(links) + 1
            links.append([link_id, int(source), source_slot, int(node_id), slot, entry["type"]])
            entry["link"] = link_id
            nodes[source]["outputs"][source_slot]["links"].append(link_id)
    return {"last_node_id": max(int(n) for n in api), "last_link_id": len(links),
            "nodes": [nodes[n] for n in order], "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("api", type=Path)
    parser.add_argument("out", type=Path, nargs="?")
    args = parser.parse_args(argv)
    out = args.out or args.api.with_name(args.api.name.replace("_api.json", ".json"))
    if out == args.api:
        raise SystemExit("give an output path: the input is not named *_api.json")
    ui = api_to_ui(json.loads(args.api.read_text()), build_registry("nodes", None))
    out.write_text(json.dumps(ui, indent=2) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
