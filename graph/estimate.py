"""Estimating, before anything runs, how much memory a workflow's tensors will take.

Nodes that allocate by their inputs (empty latents and images, upscales, batches, VAE
decodes) describe what they would make with a ``Node.estimate(inputs)`` classmethod:
``inputs`` holds each constant input as given and, for each linked input, the
``TensorSize`` its source estimated (or None when the source cannot tell). The executor
keeps every output of a prompt until the prompt ends, so the estimate of a prompt is the
sum of its outputs plus the largest working memory of any one node.

The estimate is an order of magnitude, meant to refuse a request that cannot fit (an
image of 16384x16384 pixels in a batch of 64) before it takes the machine down, not to
predict memory to the byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from graph.workflow import Link, Workflow

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class TensorSize:
    """The shape of a tensor a node would output, and bytes per element."""

    shape: tuple[int, ...]
    itemsize: int = FLOAT32_BYTES

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


@dataclass(frozen=True)
class MemoryEstimate:
    """What one node would allocate.

    ``outputs``: one entry per output slot (None where unknown); ``working_bytes``: the
    peak of its temporary tensors; ``cause``: the input that sets the size, named in the
    error when the estimate is too large.
    """

    outputs: tuple[TensorSize | None, ...] = ()
    working_bytes: int = 0
    cause: str | None = None

    @property
    def output_bytes(self) -> int:
        return sum(size.nbytes for size in self.outputs if size is not None)


@dataclass(frozen=True)
class OverBudget:
    """The node that carries the blame when a prompt's estimate exceeds the limit."""

    node_id: str
    cause: str | None
    node_bytes: int
    total_bytes: int


EstimateFn = Callable[[Mapping[str, Any]], "MemoryEstimate | None"]


def estimate_prompt(workflow: Workflow, order: Sequence[str], estimators: Mapping[str, EstimateFn],
                    limit: int) -> OverBudget | None:
    """Walks the nodes in ``order`` and returns the culprit if the estimate passes ``limit``.

    ``estimators`` maps node ids to their class's ``estimate``. The culprit is the node
    with the largest own estimate among those run before the limit was passed.
    """
    sizes: dict[str, tuple[TensorSize | None, ...]] = {}
    held = 0
    worst: tuple[int, str, str | None] = (-1, "", None)
    for node_id in order:
        spec = workflow.nodes[node_id]
        inputs = {name: _input_size(value, sizes) for name, value in spec.inputs.items()}
        estimator = estimators.get(node_id)
        try:
            estimate = estimator(inputs) if estimator is not None else None
        except Exception:  # an estimator must never block a prompt it cannot read
            estimate = None
        if estimate is None:
            sizes[node_id] = ()
            continue
        sizes[node_id] = tuple(estimate.outputs)
        own = estimate.output_bytes + estimate.working_bytes
        if own > worst[0]:
            worst = (own, node_id, estimate.cause)
        peak = held + own
        held += estimate.output_bytes
        if peak > limit:
            return OverBudget(worst[1], worst[2], worst[0], peak)
    return None


def _input_size(value: Any, sizes: Mapping[str, tuple[TensorSize | None, ...]]) -> Any:
    if not isinstance(value, Link):
        return value
    outputs = sizes.get(value.source, ())
    return outputs[value.output_index] if 0 <= value.output_index < len(outputs) else None


def format_bytes(count: int) -> str:
    """``3221225472`` -> ``"3.0 GiB"``."""
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def int_input(inputs: Mapping[str, Any], name: str, default: int = 0) -> int:
    """An integer constant of ``inputs`` (estimators read widget values with this)."""
    value = inputs.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return int(value)


def float_input(inputs: Mapping[str, Any], name: str, default: float = 0.0) -> float:
    value = inputs.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return float(value)
