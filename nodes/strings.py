"""String nodes, as ComfyUI declares them (category ``utils/string``)."""

from __future__ import annotations

from graph import Input, Node, Output


class StringConcatenate(Node):
    """Joins two strings with a delimiter between them."""

    display_name = "Concatenate Text"
    category = "utils/string"
    string_a = Input("STRING", default="", multiline=True)
    string_b = Input("STRING", default="", multiline=True)
    delimiter = Input("STRING", default="")
    outputs = (Output("STRING"),)

    def execute(self, string_a: str, string_b: str, delimiter: str) -> tuple:
        return (f"{string_a}{delimiter}{string_b}",)


class StringReplace(Node):
    """Replaces every occurrence of ``find`` in ``string`` with ``replace``."""

    display_name = "Replace Text"
    category = "utils/string"
    string = Input("STRING", default="", multiline=True)
    find = Input("STRING", default="", multiline=True)
    replace = Input("STRING", default="", multiline=True)
    outputs = (Output("STRING"),)

    def execute(self, string: str, find: str, replace: str) -> tuple:
        # str.replace with an empty needle inserts ``replace`` between every character,
        # as in ComfyUI (it calls str.replace unguarded); kept for identical results.
        return (string.replace(find, replace),)
