"""Pure-Python nodes that exercise the engine in tests (no torch, no models)."""

from __future__ import annotations

import os
import time

from graph import Input, Node, NodeResult, Output


class NumberSource(Node):
    """Outputs the integer it is given."""

    category = "test"
    value = Input("INT", default=0, min=-1000, max=1000)
    outputs = (Output("INT", "value"),)

    def execute(self, value):
        return (value,)


class AddInts(Node):
    """Adds two integers."""

    category = "test"
    a = Input("INT", default=0)
    b = Input("INT", default=0)
    outputs = (Output("INT"),)

    def execute(self, a, b):
        return (a + b,)


class ScaleFloat(Node):
    """Multiplies a number by a factor."""

    category = "test"
    x = Input("FLOAT", default=1.0, min=-10.0, max=10.0, step=0.5)
    factor = Input("FLOAT", default=2.0)
    outputs = (Output("FLOAT"),)

    def execute(self, x, factor):
        return (x * factor,)


class PickMode(Node):
    """Outputs the chosen mode name."""

    category = "test"
    mode = Input(choices=["fast", "slow"], default="fast")
    outputs = (Output("STRING"),)

    def execute(self, mode):
        return (mode,)


class JoinText(Node):
    """Joins text with an optional suffix."""

    category = "test"
    text = Input("STRING", multiline=True, default="")
    suffix = Input("STRING", default="", optional=True)
    outputs = (Output("STRING"),)

    def execute(self, text, suffix=""):
        return (text + suffix,)


class SeededValue(Node):
    """A seed-like INT with control after generate, plus a combo, like KSampler's widgets."""

    category = "test"
    seed = Input("INT", default=0, min=0, max=2**64 - 1, control_after_generate=True)
    steps = Input("INT", default=20, min=1, max=100)
    mode = Input(choices=["fast", "slow"], default="fast")
    outputs = (Output("INT"),)

    def execute(self, seed, steps, mode):
        return (seed + steps,)


class ShowValue(Node):
    """Output node: reports its input in the UI payload."""

    category = "test"
    output_node = True
    value = Input("*")
    outputs = ()

    def execute(self, value):
        return NodeResult(ui={"value": [value]})


class ShowPassThrough(Node):
    """Output node that also passes its INT on."""

    category = "test"
    output_node = True
    value = Input("INT")
    outputs = (Output("INT"),)

    def execute(self, value):
        return NodeResult(outputs=(value,), ui={"value": [value]})


class RandomNumber(Node):
    """Not deterministic: must run every time."""

    category = "test"
    not_deterministic = True
    outputs = (Output("INT"),)

    def execute(self):
        return (time.perf_counter_ns(),)


class Fail(Node):
    """Always raises."""

    category = "test"
    value = Input("INT", default=0)
    outputs = (Output("INT"),)

    def execute(self, value):
        raise ValueError(f"failing on purpose with {value}")


class SlowSteps(Node):
    """Reports progress at every step, as a sampler does."""

    category = "test"
    steps = Input("INT", default=5, min=1, max=10000)
    value = Input("INT", default=0)
    outputs = (Output("INT"),)

    def execute(self, steps, value):
        for step in range(1, steps + 1):
            self.context.progress(step, steps)
        return (value + steps,)


class InterruptAfter(Node):
    """Sets the interrupt flag at a given step of its progress loop (to test interrupts)."""

    category = "test"
    steps = Input("INT", default=10, min=1, max=10000)
    stop_at = Input("INT", default=3, min=1, max=10000)
    outputs = (Output("INT"),)

    def execute(self, steps, stop_at):
        for step in range(1, steps + 1):
            if step == stop_at:
                self.context.interrupt.set()
            self.context.progress(step, steps)
        return (steps,)


class IntRange(Node):
    """Outputs a list 0..count-1; downstream nodes are mapped over it."""

    category = "test"
    count = Input("INT", default=3, min=0, max=1000)
    outputs = (Output("INT", "numbers", is_list=True),)

    def execute(self, count):
        return (list(range(count)),)


class SumList(Node):
    """Receives a whole list."""

    category = "test"
    values = Input("INT", is_list=True)
    outputs = (Output("INT"),)

    def execute(self, values):
        return (sum(values),)


class Switch(Node):
    """Lazy: evaluates only the chosen branch."""

    category = "test"
    select = Input("BOOLEAN", default=True)
    on_true = Input("*", lazy=True)
    on_false = Input("*", lazy=True)
    outputs = (Output("*"),)

    def check_lazy_status(self, select, on_true=None, on_false=None):
        return ["on_true"] if select else ["on_false"]

    def execute(self, select, on_true=None, on_false=None):
        return (on_true if select else on_false,)


class ReadTextFile(Node):
    """Reads outside state: the file's size and mtime are its fingerprint."""

    category = "test"
    path = Input("STRING", default="")
    outputs = (Output("STRING"),)

    @classmethod
    def fingerprint(cls, context, path):
        stat = os.stat(path)
        return [stat.st_size, stat.st_mtime_ns]

    def execute(self, path):
        with open(path, encoding="utf-8") as handle:
            return (handle.read(),)


class Blob(Node):
    """Outputs a value with a declared byte size, to test the cache budget."""

    category = "test"
    size = Input("INT", default=100, min=0, max=10**12)
    tag = Input("INT", default=0)
    outputs = (Output("BLOB"),)

    def execute(self, size, tag):
        return (SizedValue(size, tag),)


class SizedValue:
    def __init__(self, size: int, tag: int) -> None:
        self.size, self.tag = size, tag

    def size_bytes(self) -> int:
        return self.size


TEST_NODES = [cls for cls in list(globals().values())
              if isinstance(cls, type) and issubclass(cls, Node) and cls is not Node]
