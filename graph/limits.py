"""Bounds on what one workflow may ask of the engine, checked before anything runs.

A request is small on the wire but can be large once expanded: a UI-format document whose
subgraphs nest instances of each other multiplies its nodes by the fan-out at every level,
and a 3 KB ``EmptyImage`` node can ask for gigabytes. ``PromptLimits`` states the bounds;
``ui_format`` and ``validate`` enforce them (``PromptTooLarge`` for a document over its node
or instance bound, a node error for a memory estimate over ``memory_bytes``).

``Budget`` counts the work of one conversion and honours a cancel flag, so a conversion
running on a worker thread stops when its request goes away.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

DEFAULT_MAX_NODES = 10_000
DEFAULT_MAX_SUBGRAPH_INSTANCES = 1_000
DEFAULT_MAX_TEXT_LENGTH = 100_000


@dataclass(frozen=True)
class PromptLimits:
    """Per-prompt bounds. ``None`` disables one.

    ``max_nodes``: nodes after subgraphs are flattened (and nodes of an API-format prompt).
    ``max_subgraph_instances``: subgraph instances expanded while converting one document.
    ``max_text_length``: characters of any one string input (a prompt text, a file name).
    ``memory_bytes``: the largest estimated tensor memory of one prompt (see ``graph.estimate``).
    """

    max_nodes: int | None = DEFAULT_MAX_NODES
    max_subgraph_instances: int | None = DEFAULT_MAX_SUBGRAPH_INSTANCES
    max_text_length: int | None = DEFAULT_MAX_TEXT_LENGTH
    memory_bytes: int | None = None


UNLIMITED = PromptLimits(None, None, None, None)


class PromptTooLarge(ValueError):
    """A document over one of its ``PromptLimits``; ``limit`` names the bound."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class PreparationCancelled(Exception):
    """The request that asked for a conversion went away before it finished."""


class Budget:
    """Counts the nodes and subgraph instances one conversion produces."""

    def __init__(self, limits: PromptLimits | None, cancel: threading.Event | None = None) -> None:
        self.limits = limits or UNLIMITED
        self.cancel = cancel
        self.nodes = 0
        self.instances = 0

    def add_node(self) -> None:
        self.nodes += 1
        limit = self.limits.max_nodes
        if limit is not None and self.nodes > limit:
            raise PromptTooLarge(f"the workflow has more than {limit} nodes once its subgraphs are expanded",
                                 "max_nodes")
        if self.cancel is not None and self.cancel.is_set():
            raise PreparationCancelled("the request was cancelled")

    def add_instance(self) -> None:
        self.instances += 1
        limit = self.limits.max_subgraph_instances
        if limit is not None and self.instances > limit:
            raise PromptTooLarge(f"the workflow expands more than {limit} subgraph instances",
                                 "max_subgraph_instances")
        if self.cancel is not None and self.cancel.is_set():
            raise PreparationCancelled("the request was cancelled")
