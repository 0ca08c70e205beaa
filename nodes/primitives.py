"""Primitive nodes, as ComfyUI declares them: one typed value typed into a widget and
passed on, so that several nodes can share it (a seed, a size, a prompt).

Unlike the editor's frontend-only ``PrimitiveNode`` these are real nodes that run (and
are cached like any other); ComfyUI's workflow templates use them widely.
"""

from __future__ import annotations

import sys

from graph import Input, Node, Output


class PrimitiveInt(Node):
    """An integer. Like a seed, it carries a control_after_generate entry in the editor."""

    display_name = "Int"
    category = "utils/primitive"
    # ComfyUI bounds it by the platform's largest index (sys.maxsize), not by a UI range.
    value = Input("INT", default=0, min=-sys.maxsize, max=sys.maxsize, control_after_generate=True)
    outputs = (Output("INT"),)

    def execute(self, value: int) -> tuple:
        return (int(value),)


class PrimitiveFloat(Node):
    """A floating-point number."""

    display_name = "Float"
    category = "utils/primitive"
    value = Input("FLOAT", default=0.0, min=-sys.maxsize, max=sys.maxsize, step=0.1)
    outputs = (Output("FLOAT"),)

    def execute(self, value: float) -> tuple:
        return (float(value),)


class PrimitiveString(Node):
    """A one-line string."""

    display_name = "Text"
    category = "utils/primitive"
    value = Input("STRING", default="")
    outputs = (Output("STRING"),)

    def execute(self, value: str) -> tuple:
        return (value,)


class PrimitiveStringMultiline(Node):
    """A multi-line string (a prompt, say)."""

    display_name = "Text (Multiline)"
    category = "utils/primitive"
    value = Input("STRING", default="", multiline=True)
    outputs = (Output("STRING"),)

    def execute(self, value: str) -> tuple:
        return (value,)


class PrimitiveBoolean(Node):
    """True or false."""

    display_name = "Boolean"
    category = "utils/primitive"
    value = Input("BOOLEAN", default=False)
    outputs = (Output("BOOLEAN"),)

    def execute(self, value: bool) -> tuple:
        return (value,)
