"""Routing and inspection nodes: ComfyUI's lazy Switch and Preview as Text."""

from __future__ import annotations

import json
from typing import Any

from graph import Input, Node, NodeResult, Output

_BRANCHES = ("on_false", "on_true")


class ComfySwitchNode(Node):
    """Passes on ``on_true`` or ``on_false`` by ``switch``; only the chosen branch runs.

    Both branches are lazy, so the nodes feeding the other branch are never executed.
    ComfyUI's current Switch requires both branches; an older one (still found in saved
    workflows) let either be left unconnected and then passed on the connected one
    whatever the switch said. Both kinds of workflow are accepted here: the branches are
    optional, and when the chosen one is not connected the other is passed on.
    """

    display_name = "If/Else Switch"
    category = "logic"
    switch = Input("BOOLEAN", default=False)
    # ComfyUI declares these as MatchType inputs; "*" is this engine's any-type.
    on_false = Input("*", optional=True, lazy=True)
    on_true = Input("*", optional=True, lazy=True)
    outputs = (Output("*", "output"),)

    def check_lazy_status(self, switch: bool, on_false: Any = None, on_true: Any = None) -> list[str]:
        branch = self._branch(switch)
        value = on_true if branch == "on_true" else on_false
        return [branch] if value is None else []

    def execute(self, switch: bool, on_false: Any = None, on_true: Any = None) -> tuple:
        return (on_true if self._branch(switch) == "on_true" else on_false,)

    def _branch(self, switch: bool) -> str:
        """The input to pass on: the chosen one, or the only connected one."""
        present = self._connected()
        if not present:
            raise ValueError("At least one of on_false or on_true must be connected to the Switch node")
        wanted = "on_true" if switch else "on_false"
        return wanted if wanted in present else present[0]

    def _connected(self) -> list[str]:
        # The engine passes None both for a lazy input not yet computed and for one that is
        # not connected at all, so the workflow itself tells which branches exist.
        workflow = getattr(self.context, "workflow", None)
        spec = workflow.nodes.get(self.context.node_id) if workflow is not None else None
        if spec is None:
            return list(_BRANCHES)
        return [name for name in _BRANCHES if name in spec.inputs]


class PreviewAny(Node):
    """Shows any value as text in the editor and passes the text on."""

    display_name = "Preview as Text"
    category = "utilities"
    output_node = True
    source = Input("*")
    outputs = (Output("STRING"),)

    def execute(self, source: Any = None) -> NodeResult:
        text = preview_text(source)
        return NodeResult(outputs=(text,), ui={"text": [text]})


def preview_text(value: Any) -> str:
    """ComfyUI's text for a value: strings as they are, numbers and booleans by ``str``,
    anything JSON can write as indented JSON, the rest by ``str``."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    try:
        return json.dumps(value, indent=4)
    except (TypeError, ValueError):
        pass
    try:
        return _tensor_aware_str(value)
    except Exception:  # a value whose __str__ fails still gets a preview
        return "source exists, but could not be serialized."


def _tensor_aware_str(value: Any) -> str:
    """``str(value)``, with tensors showing 6 items at each edge as ComfyUI prints them."""
    torch = _loaded_torch()
    if torch is None:
        return str(value)
    torch.set_printoptions(edgeitems=6)
    try:
        return str(value)
    finally:
        # torch has no getter for its print options: put its defaults back.
        torch.set_printoptions(profile="default")


def _loaded_torch() -> Any:
    # Only a value made by torch can hold tensors; don't import torch for a plain object.
    import sys

    return sys.modules.get("torch")
