"""Shared fixtures: a registry of the pure-Python test nodes and a helper to run workflows."""

from __future__ import annotations

import pytest

from graph import Executor, NodeRegistry, OutputCache, prepare
from tests.engine_nodes import TEST_NODES


@pytest.fixture
def registry() -> NodeRegistry:
    registry = NodeRegistry()
    for cls in TEST_NODES:
        registry.register(cls, builtin=True)
    return registry


class Runner:
    """Validates and runs workflows on one executor, recording every event."""

    def __init__(self, registry: NodeRegistry, cache: OutputCache | None = None) -> None:
        self.registry = registry
        self.executor = Executor(cache if cache is not None else OutputCache())
        self.events: list[tuple[str, dict]] = []

    def run(self, document, targets=None, **kwargs):
        checked = prepare(document, self.registry, targets)
        assert checked.ok, checked.response()
        self.events = []
        return self.executor.execute(checked.plan, on_event=lambda e, d: self.events.append((e, d)), **kwargs)

    def event_names(self) -> list[str]:
        return [name for name, _ in self.events]


@pytest.fixture
def runner(registry) -> Runner:
    return Runner(registry)
