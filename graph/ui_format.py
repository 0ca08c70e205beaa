"""Converting the editor's UI-format workflow into the API format the engine runs.

The UI format (what the editor saves: ``{"nodes": [...], "links": [...]}``) stores nodes
with positional ``widgets_values`` and a separate link table. Converting needs the node declarations: widget values are matched
to widget inputs in declaration order, and a seed-like INT with
``control_after_generate`` is followed by one extra entry ("fixed", "randomize", ...)
that is not an input. Muted nodes (mode 2) are dropped; bypassed nodes (mode 4) pass
each of their inputs through to the outputs of the same type. Frontend-only nodes
(Reroute, PrimitiveNode, notes) are resolved away. Subgraph instances (nodes whose type is
the id of one of the document's ``definitions.subgraphs``) are flattened into their inner
nodes, whose ids in the prompt are the instance path and the node's id joined by ":"
(``"10:3"``), as ComfyUI's frontend names them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graph.limits import Budget
from graph.node import Input, NodeDefinition
from graph.registry import NodeRegistry
from graph.workflow import Link, NodeSpec, Workflow

MODE_MUTED = 2
MODE_BYPASSED = 4
_CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize", "increment-wrap"}
_NOTE_TYPES = {"Note", "MarkdownNote"}
_MAX_LINK_HOPS = 256
_MAX_SUBGRAPH_DEPTH = 32
# The ids litegraph gives a subgraph's own input and output sides in its links.
_SUBGRAPH_INPUT_ID = -10
_SUBGRAPH_OUTPUT_ID = -20


def is_ui_format(document: Any) -> bool:
    """True for an editor (UI-format) document rather than an API-format prompt."""
    return isinstance(document, dict) and isinstance(document.get("nodes"), list) and "links" in document


def ui_to_workflow(document: dict[str, Any], registry: NodeRegistry, budget: Budget | None = None,
                   runtime: Any = None) -> Workflow:
    """Converts a UI-format document; problems are kept per node.

    ``runtime`` (the application's, as for validation) give the choices of combos listed
    from folders: an empty one takes the first, as in ComfyUI's frontend; without them it
    stays empty and validation reports it.

    Raises only ``graph.limits.PromptTooLarge`` (the expansion passed a bound of
    ``budget``) and ``PreparationCancelled`` (its cancel flag was set).
    """
    converter = _Converter(document, registry, budget or Budget(None), runtime)
    return converter.convert()


def ui_to_api(document: dict[str, Any], registry: NodeRegistry,
              runtime: Any = None) -> dict[str, Any]:
    """Converts a UI-format document to an API-format prompt (the ``convert`` CLI command)."""
    return ui_to_workflow(document, registry, runtime=runtime).to_api()


def _node_table(nodes: Any) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for node in nodes if isinstance(nodes, list) else []:
        if isinstance(node, dict) and isinstance(node.get("id"), (int, str)) and not isinstance(node.get("id"), bool):
            table[str(node["id"])] = node
    return table


def _link_table(links: Any) -> dict[str, tuple[str, int, str]]:
    """link id -> (source id, source slot, link type)."""
    table: dict[str, tuple[str, int, str]] = {}
    for link in links if isinstance(links, list) else []:
        parsed = _parse_link(link)
        if parsed:
            link_id, source, slot, link_type = parsed
            table[link_id] = (source, slot, link_type)
    return table


@dataclass
class _Graph:
    """The nodes and links of the workflow, or of one subgraph instance inside it.

    ``path``: the ids of the subgraph instances it lies in (empty for the workflow itself);
    a node's id in the prompt is the path and its own id joined by ":", as in ComfyUI.
    ``outputs``: for a subgraph, which inner link feeds each of its outputs.
    ``instance``: the graph holding the instance node, and that node.
    ``promoted``: widget values the instance sets on its inner nodes through the older
    frontends' promoted ("proxy") widgets, by inner node id and widget name.
    """

    nodes: dict[str, dict[str, Any]]
    links: dict[str, tuple[str, int, str]]
    path: tuple[str, ...] = ()
    outputs: dict[int, str] = field(default_factory=dict)
    instance: tuple[_Graph, dict[str, Any]] | None = None
    promoted: dict[str, dict[str, Any]] = field(default_factory=dict)

    def node_id(self, node_id: str) -> str:
        return ":".join((*self.path, node_id))


class _Converter:
    def __init__(self, document: dict[str, Any], registry: NodeRegistry, budget: Budget,
                 runtime: Any = None) -> None:
        self.registry = registry
        self.budget = budget
        self.runtime = runtime
        # Each instance is expanded once, however many links lead into it.
        self.entered: dict[tuple[str, ...], _Graph] = {}
        self.root = _Graph(_node_table(document.get("nodes")), _link_table(document.get("links")))
        definitions = document.get("definitions")
        subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
        self.subgraphs = {d["id"]: d for d in subgraphs if isinstance(d, dict) and isinstance(d.get("id"), str)} \
            if isinstance(subgraphs, list) else {}

    def convert(self) -> Workflow:
        specs: dict[str, NodeSpec] = {}
        self._convert_graph(self.root, specs)
        return Workflow(specs)

    def _convert_graph(self, graph: _Graph, specs: dict[str, NodeSpec]) -> None:
        for node_id, node in graph.nodes.items():
            self.budget.add_node()
            node_type = node.get("type")
            full_id = graph.node_id(node_id)
            if not isinstance(node_type, str):
                spec = NodeSpec(full_id, "")
                spec.parse_errors.append(("invalid_prompt", f"node {full_id} has no type", None))
                specs[full_id] = spec
                continue
            if self._is_virtual(node) or node.get("mode") in (MODE_MUTED, MODE_BYPASSED):
                continue
            if self._is_instance(node_type):
                inner = self._enter(graph, node_id)
                if inner is None:
                    spec = NodeSpec(full_id, node_type)
                    spec.parse_errors.append(("invalid_prompt", f"subgraph {node_type} is nested in itself", None))
                    specs[full_id] = spec
                else:
                    self._convert_graph(inner, specs)
                continue
            specs[full_id] = self._convert_node(graph, node_id, node, node_type)

    def _is_virtual(self, node: dict[str, Any]) -> bool:
        node_type = node.get("type")
        return node_type in _NOTE_TYPES or node_type in ("Reroute", "PrimitiveNode") and node_type not in self.registry

    def _is_instance(self, node_type: Any) -> bool:
        return node_type in self.subgraphs and node_type not in self.registry

    def _enter(self, graph: _Graph, node_id: str) -> _Graph | None:
        """The graph inside the subgraph instance ``node_id`` of ``graph`` (None when the
        subgraph contains itself)."""
        path = (*graph.path, node_id)
        if path in self.entered:
            return self.entered[path]
        node = graph.nodes[node_id]
        definition = self.subgraphs[node["type"]]
        outer, containing = graph, []
        while outer.instance is not None:
            outer, holder = outer.instance
            containing.append(holder.get("type"))
        if node["type"] in containing or len(containing) >= _MAX_SUBGRAPH_DEPTH:
            return None
        self.budget.add_instance()
        raw_links = definition.get("links")
        links = _link_table(raw_links)
        outputs = {}
        for link in raw_links if isinstance(raw_links, list) else []:
            if isinstance(link, dict) and link.get("target_id") == _SUBGRAPH_OUTPUT_ID:
                outputs[link.get("target_slot")] = str(link.get("id"))
        inner = _Graph(_node_table(definition.get("nodes")), links, path, outputs, (graph, node),
                       _proxy_widget_values(node))
        self.entered[path] = inner
        return inner

    def _convert_node(self, graph: _Graph, node_id: str, node: dict[str, Any], node_type: str) -> NodeSpec:
        spec = NodeSpec(graph.node_id(node_id), node_type)
        title = node.get("title")
        if isinstance(title, str):
            spec.title = title
        definition = self.registry.get(node_type)
        if definition is not None:
            spec.inputs.update(_widget_inputs(definition, node.get("widgets_values"), self.runtime))
            spec.inputs.update({name: value for name, value in graph.promoted.get(node_id, {}).items()
                                if name in definition.widget_names})
        for entry in node.get("inputs") or []:
            if not isinstance(entry, dict) or entry.get("link") is None:
                continue
            name = entry.get("name")
            widget = entry.get("widget")
            if isinstance(widget, dict) and isinstance(widget.get("name"), str):
                name = widget["name"]
            if not isinstance(name, str):
                continue
            # An input whose link ends at a muted node keeps its widget value, if it has one;
            # a missing required input is reported by validation. One fed by a frontend
            # PrimitiveNode takes the primitive's value, as ComfyUI's frontend does on load.
            link = self._resolve(graph, entry.get("link"))
            if isinstance(link, _PrimitiveValue):
                spec.inputs[name] = link.value
            elif link is not None:
                spec.inputs[name] = link
        return spec

    def _resolve(self, graph: _Graph, link_id: Any) -> Link | _PrimitiveValue | None:
        """Follows a link through reroutes, bypassed nodes and subgraph boundaries to the
        node that produces it.

        Returns the value of a frontend PrimitiveNode it ends at, or None when it ends at a
        muted node, nowhere, or at a primitive without a value (the target's own widget
        value stands).
        """
        for _ in range(_MAX_LINK_HOPS):
            found = graph.links.get(str(link_id))
            if found is None:
                return None
            source_id, slot, link_type = found
            if source_id == str(_SUBGRAPH_INPUT_ID):  # a subgraph input: continue outside
                if graph.instance is None:
                    return None
                graph, instance = graph.instance
                link_id = _first_input_link(instance, slot)
                if link_id is None:
                    # An unconnected input shown as a widget on the instance: its value
                    # there is what the inner widgets it feeds get, as ComfyUI sends it.
                    found_value = _instance_widget_value(instance, slot)
                    return None if found_value is None else _PrimitiveValue(found_value[0])
                continue
            source = graph.nodes.get(source_id)
            if source is None:
                return Link(graph.node_id(source_id), slot)  # validation reports the missing node
            source_type = source.get("type")
            if source_type == "PrimitiveNode" and source_type not in self.registry:
                values = source.get("widgets_values")
                return _PrimitiveValue(values[0]) if isinstance(values, list) and values else None
            if source_type == "Reroute" and source_type not in self.registry:
                link_id = _first_input_link(source, 0)
            elif source.get("mode") == MODE_MUTED:
                return None
            elif source.get("mode") == MODE_BYPASSED:
                link_id = _bypass_input_link(source, slot, link_type)
            elif self._is_instance(source_type):  # a subgraph output: continue inside
                inner = self._enter(graph, source_id)
                if inner is None:  # nested in itself: the instance carries the error
                    return Link(graph.node_id(source_id), slot)
                graph, link_id = inner, inner.outputs.get(slot)
            else:
                return Link(graph.node_id(source_id), slot)
            if link_id is None:
                return None
        return None


@dataclass(frozen=True)
class _PrimitiveValue:
    """What a frontend PrimitiveNode feeds into the widget inputs it is linked to."""

    value: Any


def _parse_link(link: Any) -> tuple[str, str, int, str] | None:
    if isinstance(link, list) and len(link) >= 6:
        link_id, source, slot, _target, _target_slot, link_type = link[:6]
    elif isinstance(link, dict):
        link_id, source, slot = link.get("id"), link.get("origin_id"), link.get("origin_slot")
        link_type = link.get("type")
    else:
        return None
    if not isinstance(source, (int, str)) or isinstance(source, bool):
        return None
    if not isinstance(slot, int) or isinstance(slot, bool) or not isinstance(link_id, (int, str)):
        return None
    return str(link_id), str(source), slot, link_type if isinstance(link_type, str) else "*"


def _instance_widget_value(instance: dict[str, Any], slot: int) -> tuple[Any] | None:
    """The value a subgraph instance holds for its input ``slot`` when that input is one of
    its widgets (current frontends: the inputs marked ``widget``, whose values are saved in
    order in ``widgets_values`` and by input name in ``widgets_values_named``), or None.

    The frontend reads the positional list (the named one only behind a setting that is off
    by default; a capture with the two disagreeing confirmed it), so that list comes first."""
    inputs = instance.get("inputs")
    if not isinstance(inputs, list) or not 0 <= slot < len(inputs) or not isinstance(inputs[slot], dict):
        return None
    entry = inputs[slot]
    if not isinstance(entry.get("widget"), dict):
        return None
    values = instance.get("widgets_values")
    index = sum(1 for other in inputs[:slot] if isinstance(other, dict) and isinstance(other.get("widget"), dict))
    named = instance.get("widgets_values_named")
    if isinstance(values, list) and index < len(values):
        value = values[index]
    elif isinstance(named, dict) and isinstance(entry.get("name"), str) and entry["name"] in named:
        value = named[entry["name"]]
    else:
        return None
    return None if value is None else (value,)


def _proxy_widget_values(instance: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Values set on a subgraph instance through ``properties.proxyWidgets`` (frontends
    before widgets became the instance's own inputs): entries ``[inner node id, widget
    name]``, their values in the same order in ``widgets_values``. Current frontends read
    such a file the same way when they load it, so the instance's values win."""
    properties = instance.get("properties")
    proxies = properties.get("proxyWidgets") if isinstance(properties, dict) else None
    values = instance.get("widgets_values")
    inputs = instance.get("inputs")
    if not isinstance(proxies, list) or not isinstance(values, list):
        return {}
    if isinstance(inputs, list) and any(isinstance(i, dict) and isinstance(i.get("widget"), dict) for i in inputs):
        return {}  # a current save: its widgets_values belong to its widget inputs
    promoted: dict[str, dict[str, Any]] = {}
    for entry, value in zip(proxies, values, strict=False):  # a shorter list leaves the rest as they are
        if isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, (str, int)) for part in entry) \
                and value is not None:
            promoted.setdefault(str(entry[0]), {})[str(entry[1])] = value
    return promoted


def _first_input_link(node: dict[str, Any], index: int) -> Any:
    inputs = node.get("inputs") or []
    # A negative slot (a malformed link) must not index from the end.
    if isinstance(inputs, list) and isinstance(index, int) and 0 <= index < len(inputs) \
            and isinstance(inputs[index], dict):
        return inputs[index].get("link")
    return None


def _bypass_input_link(node: dict[str, Any], slot: int, link_type: str) -> Any:
    """The input of a bypassed node that feeds its output ``slot``: the same-typed input,
    preferring the one at the same position, as ComfyUI does."""
    inputs = [i for i in (node.get("inputs") or []) if isinstance(i, dict)]
    outputs = node.get("outputs") or []
    if isinstance(outputs, list) and 0 <= slot < len(outputs) and isinstance(outputs[slot], dict):
        link_type = outputs[slot].get("type") or link_type
    candidates = [(index, entry) for index, entry in enumerate(inputs)
                  if entry.get("type") == link_type and entry.get("link") is not None]
    if not candidates:
        return None
    candidates.sort(key=lambda pair: (pair[0] != slot, pair[0]))
    return candidates[0][1].get("link")


def _widget_inputs(definition: NodeDefinition, widgets_values: Any,
                   runtime: Any = None) -> dict[str, Any]:
    """A node's widget values as ComfyUI's frontend has them after loading: its saved
    ``widgets_values`` (a list, or a dict by name) mapped to its widget inputs, with the
    frontend's load-time fix-ups, and every widget that has no saved value at its declared
    default (the frontend creates each widget at its default and only then restores the
    saved values over it)."""
    if isinstance(widgets_values, dict):
        values = {name: widgets_values[name] for name in definition.widget_names if name in widgets_values}
    else:
        values = _positional_widget_inputs(definition, widgets_values if isinstance(widgets_values, list) else [])
    _fill_defaults(definition, values, runtime)
    _load_fixups(definition, values, runtime)
    return values


def _positional_widget_inputs(definition: NodeDefinition, widgets_values: list[Any]) -> dict[str, Any]:
    # Since frontend 1.16 a forceInput input has no widget and no saved value; files saved
    # before kept a placeholder value for it. A list exactly as long as that older layout
    # is read with it and the placeholders dropped, as the frontend's migration does.
    names = [name for name in definition.widget_names if not definition.inputs[name].force_input]
    legacy = len(names) < len(definition.widget_names) and (
        len(widgets_values) == _slot_count(definition, definition.widget_names) != _slot_count(definition, names))
    values = _map_positions(definition, list(definition.widget_names) if legacy else names, widgets_values)
    return {name: value for name, value in values.items() if not definition.inputs[name].force_input}


def _slot_count(definition: NodeDefinition, names: Any) -> int:
    """How many ``widgets_values`` entries the frontend saves for these widgets (a seed-like
    INT is followed by its control_after_generate entry)."""
    return sum(2 if definition.inputs[name].control_after_generate else 1 for name in names)


def _map_positions(definition: NodeDefinition, names: list[str], widgets_values: list[Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    position = 0
    # A DynamicCombo's hidden widgets are left out of what ComfyUI saves; the values of
    # those its choice reveals follow its own. A list as long as every widget was saved
    # by an editor that shows them all (this one's), in declaration order.
    revealed = definition.revealed_names()
    full = not revealed or len(widgets_values) >= len(names)
    pending = [name for name in names if full or name not in revealed]
    while pending and position < len(widgets_values):
        name = pending.pop(0)
        value = values[name] = widgets_values[position]
        position += 1
        inp = definition.inputs[name]
        if inp.dynamic and not full:
            pending[:0] = [sub for sub in inp.revealed(value) if _is_shown_widget(definition, inp, value, sub)]
        follower = widgets_values[position] if position < len(widgets_values) else None
        # The control entry is "fixed", "randomize", ... ; ComfyUI's older default workflow
        # saved it as true/false (the frontend reads them as "randomize"/"fixed").
        if inp.control_after_generate and (isinstance(follower, bool) or
                                           isinstance(follower, str) and follower in _CONTROL_VALUES):
            position += 1
        elif inp.image_upload and follower in ("image", None) and position < len(widgets_values):
            position += 1
    return values


def _is_shown_widget(definition: NodeDefinition, combo: Input, choice: Any, name: str) -> bool:
    """True when the input ``name`` that ``choice`` of ``combo`` reveals gets a widget."""
    declared = combo.revealed_declaration(choice, name) or definition.inputs.get(name)
    return name in definition.inputs and declared is not None and declared.is_widget and not declared.force_input


def _fill_defaults(definition: NodeDefinition, values: dict[str, Any], runtime: Any) -> None:
    """Widgets without a saved value take their declared default (a combo without one, its
    first choice), as a node the frontend creates has them; a DynamicCombo's hidden widgets
    only when its current choice shows them, with that choice's declaration."""
    for name, inp in definition.selected_inputs(values).items():
        if name in values or not inp.is_widget or inp.force_input or name not in definition.inputs:
            continue
        default = inp.default if inp.default is not None else _first_choice(inp, runtime)
        if default is not None:
            values[name] = default


def _first_choice(inp: Input, runtime: Any = None) -> Any:
    """A combo's first choice. Lists read from folders need the application's runtime:
    without them a file combo without a value is left to validation."""
    if inp.type != "COMBO" or (callable(inp.choices) and runtime is None):
        return None
    try:
        choices = inp.choice_list(runtime)
    except (OSError, ValueError):  # a folder that cannot be listed: validation reports the empty input
        return None
    return choices[0] if choices else None


def _load_fixups(definition: NodeDefinition, values: dict[str, Any], runtime: Any) -> None:
    """The frontend's corrections of values saved by older versions, made when it loads a workflow."""
    for name, value in list(values.items()):
        inp = definition.inputs[name]
        if value is None and inp.type == "COMBO":  # an empty combo takes its first choice
            first = _first_choice(inp, runtime)
            if first is not None:
                values[name] = first
    sampler = values.get("sampler_name")
    # KSampler's samplers were once named "sample_euler", ...
    if definition.name in ("KSampler", "KSamplerAdvanced") and isinstance(sampler, str) \
            and sampler.startswith("sample_"):
        values["sampler_name"] = sampler[len("sample_"):]


def _is_hashable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))
