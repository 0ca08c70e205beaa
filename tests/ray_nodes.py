"""Nodes for the scale-out tests and benchmark: a stand-in checkpoint that takes time to
load and sits in the cache's "models" pool, a node that uses it, and one that reads an
input file (an upload the worker must have been sent)."""

from __future__ import annotations

import hashlib
import os
import time

from graph import Input, Node, NodeResult, Output


class FakeModel:
    """What FakeCheckpoint loads: counts as a model for the cache (pool and size)."""

    cache_pool = "models"

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size

    def size_bytes(self) -> int:
        return self.size


class FakeCheckpoint(Node):
    """Takes ``load_seconds`` to "load" ``ckpt_name``, like a checkpoint loader."""

    category = "test"
    ckpt_name = Input("STRING", default="a.safetensors")
    load_seconds = Input("FLOAT", default=0.5, min=0.0, max=60.0)
    size = Input("INT", default=1000, min=0, max=10**12)
    outputs = (Output("MODEL"),)

    def execute(self, ckpt_name, load_seconds, size):
        time.sleep(load_seconds)
        return (FakeModel(ckpt_name, size),)


class UseModel(Node):
    """Waits ``seconds`` (checking for interrupts), then shows the model's name and this process id."""

    category = "test"
    output_node = True
    not_deterministic = True  # runs every time, as a sampler with a new seed would
    model = Input("MODEL")
    seconds = Input("FLOAT", default=0.2, min=0.0, max=3600.0)

    def execute(self, model, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.context.check_interrupt()
            time.sleep(0.01)
        return NodeResult(ui={"model": [model.name], "pid": [os.getpid()]})


class InputFileDigest(Node):
    """Shows the size and SHA-256 of a file in the input folder."""

    category = "test"
    output_node = True
    name = Input("STRING", default="")

    @classmethod
    def fingerprint(cls, context, name):  # as LoadImage: a replaced file is read again
        stat = (context.folders.input / name).stat()
        return [stat.st_size, stat.st_mtime_ns]

    def execute(self, name):
        data = (self.context.folders.input / name).read_bytes()
        return NodeResult(ui={"size": [len(data)], "sha256": [hashlib.sha256(data).hexdigest()]})
