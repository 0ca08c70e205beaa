"""A fake model loader for the model-memory server tests: its output joins the cache's "models" pool."""

from __future__ import annotations

from graph import Input, Node, Output


class FakeModel:
    """Stands in for a model handle: a pool name and a size."""

    cache_pool = "models"

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size

    def size_bytes(self) -> int:
        return self.size


class FakeModelLoader(Node):
    """Outputs a FakeModel of ``size`` bytes."""

    category = "test"
    name = Input("STRING", default="m")
    size = Input("INT", default=1000, min=0, max=10**12)
    outputs = (Output("MODEL"),)

    def execute(self, name, size):
        return (FakeModel(name, size),)


class ModelName(Node):
    """Reads the name of a FakeModel, plus a suffix."""

    category = "test"
    model = Input("MODEL")
    suffix = Input("STRING", default="")
    outputs = (Output("STRING"),)

    def execute(self, model, suffix):
        return (model.name + suffix,)
