"""The workflow data model and the API-format parser.

An API-format workflow ("prompt") maps node ids to ``{"class_type", "inputs"}``; an
input value is a constant or a link ``[source_id, output_index]``. Parsing never
raises on bad JSON shapes: problems are recorded per node and reported by validation,
so one malformed node does not hide the errors of the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Link:
    """A connection from output ``output_index`` of node ``source`` to an input."""

    source: str
    output_index: int


@dataclass
class NodeSpec:
    """One node of a parsed workflow: its class and its input values (constants or Links)."""

    node_id: str
    class_type: str
    inputs: dict[str, Any] = field(default_factory=dict)
    title: str | None = None
    # Shape problems found while parsing, as (error_type, message, input_name) triples.
    parse_errors: list[tuple[str, str, str | None]] = field(default_factory=list)


@dataclass
class Workflow:
    """A parsed workflow. ``nodes`` keeps the order of the source document."""

    nodes: dict[str, NodeSpec]
    # Problems that belong to no single node (e.g. the document is not an object).
    errors: list[str] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        """Serialises back to API format (constant lists wrapped as ``{"__value__": ...}``)."""
        out: dict[str, Any] = {}
        for node_id, spec in self.nodes.items():
            inputs = {}
            for name, value in spec.inputs.items():
                if isinstance(value, Link):
                    inputs[name] = [value.source, value.output_index]
                elif isinstance(value, list):
                    inputs[name] = {"__value__": value}
                else:
                    inputs[name] = value
            entry: dict[str, Any] = {"class_type": spec.class_type, "inputs": inputs}
            if spec.title:
                entry["_meta"] = {"title": spec.title}
            out[node_id] = entry
        return out


def parse_input_value(value: Any) -> tuple[Any, str | None]:
    """Interprets one API-format input value.

    Returns ``(value, problem)``: a ``Link`` for ``[id, index]``, the unwrapped list for
    ``{"__value__": [...]}``, else the constant itself. ``problem`` describes a value that
    looks like a link but is malformed.
    """
    if isinstance(value, list):
        if len(value) != 2:
            return value, f"a link must be [node_id, output_index], got a list of {len(value)} items"
        source, index = value
        if isinstance(source, bool) or not isinstance(source, (str, int)):
            return value, f"link source must be a node id, got {type(source).__name__}"
        if isinstance(index, bool) or not isinstance(index, int):
            return value, f"link output index must be an integer, got {type(index).__name__}"
        return Link(str(source), index), None
    if isinstance(value, dict) and set(value) == {"__value__"}:
        return value["__value__"], None
    return value, None


def parse_api_workflow(document: Any) -> Workflow:
    """Parses an API-format workflow. Never raises: shape errors are kept per node."""
    if not isinstance(document, dict):
        return Workflow({}, errors=[f"a workflow must be a JSON object, got {type(document).__name__}"])
    nodes: dict[str, NodeSpec] = {}
    for raw_id, raw_node in document.items():
        node_id = str(raw_id)
        if not isinstance(raw_node, dict):
            spec = NodeSpec(node_id, "")
            spec.parse_errors.append(("invalid_prompt", f"node {node_id} must be an object", None))
            nodes[node_id] = spec
            continue
        class_type = raw_node.get("class_type")
        spec = NodeSpec(node_id, class_type if isinstance(class_type, str) else "")
        if not isinstance(class_type, str):
            spec.parse_errors.append(("invalid_prompt", f"node {node_id} has no class_type", None))
        meta = raw_node.get("_meta")
        if isinstance(meta, dict) and isinstance(meta.get("title"), str):
            spec.title = meta["title"]
        raw_inputs = raw_node.get("inputs", {})
        if not isinstance(raw_inputs, dict):
            spec.parse_errors.append(("invalid_prompt", "inputs must be an object", None))
            raw_inputs = {}
        for name, raw_value in raw_inputs.items():
            # Fast path for the two common shapes: a well-formed link and a scalar constant.
            kind = type(raw_value)
            if kind is list and len(raw_value) == 2 and type(raw_value[0]) is str and type(raw_value[1]) is int:
                spec.inputs[str(name)] = Link(raw_value[0], raw_value[1])
                continue
            if kind is str or kind is int or kind is float or kind is bool:
                spec.inputs[str(name)] = raw_value
                continue
            value, problem = parse_input_value(raw_value)
            if problem:
                spec.parse_errors.append(("bad_linked_input", problem, str(name)))
                continue
            spec.inputs[str(name)] = value
        nodes[node_id] = spec
    return Workflow(nodes)
