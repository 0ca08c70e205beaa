"""Nodes for the server tests: real image files in the output folder, previews, a long wait."""

from __future__ import annotations

import time

from graph import Input, Node, NodeResult, Output


class SaveTestImage(Node):
    """Writes a small PNG of the given colour into the output folder, as SaveImage does."""

    category = "test"
    output_node = True
    red = Input("INT", default=255, min=0, max=255)
    filename_prefix = Input("STRING", default="test")

    def execute(self, red, filename_prefix):
        from PIL import Image

        folder = self.context.folders.output
        folder.mkdir(parents=True, exist_ok=True)
        counter = 1
        while (folder / f"{filename_prefix}_{counter:05}_.png").exists():
            counter += 1
        name = f"{filename_prefix}_{counter:05}_.png"
        Image.new("RGB", (16, 8), (red, 0, 0)).save(folder / name)
        return NodeResult(ui={"images": [{"filename": name, "subfolder": "", "type": "output"}]})


class PreviewSteps(Node):
    """Reports progress with a live preview image at every step."""

    category = "test"
    output_node = True
    steps = Input("INT", default=3, min=1, max=100)

    def execute(self, steps):
        from PIL import Image

        for step in range(1, steps + 1):
            self.context.progress(step, steps, preview=Image.new("RGB", (8, 8), (0, 10 * step, 0)))
        return NodeResult(ui={"value": [steps]})


class Wait(Node):
    """Waits up to ``seconds`` (checking for interrupts); output node."""

    category = "test"
    output_node = True
    seconds = Input("FLOAT", default=1.0, min=0.0, max=3600.0)
    tag = Input("INT", default=0)

    def execute(self, seconds, tag):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.context.check_interrupt()
            time.sleep(0.01)
        return NodeResult(ui={"value": [tag]})


class DelayedValue(Node):
    """Outputs ``value`` after waiting ``seconds`` (checking for interrupts)."""

    category = "test"
    seconds = Input("FLOAT", default=0.5, min=0.0, max=3600.0)
    value = Input("INT", default=0)
    outputs = (Output("INT"),)

    def execute(self, seconds, value):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.context.check_interrupt()
            time.sleep(0.01)
        return (value,)


class ExitProcess(Node):
    """Calls ``sys.exit`` (a node that ends its thread unless the worker catches BaseException)."""

    category = "test"
    output_node = True
    code = Input("INT", default=3)

    def execute(self, code):
        import sys

        sys.exit(code)
