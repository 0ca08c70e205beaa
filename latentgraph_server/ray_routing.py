"""Which Ray worker runs a prompt: model-affine, never a busy one (no Ray imported here).

A model is known by its loader node's content: the class and the constant inputs of a node
with no linked input (``CheckpointLoaderSimple:{"ckpt_name":"a.safetensors"}``). The worker
reports the keys of the nodes whose outputs sit in its cache's "models" pool
(``graph.cache``); the front computes the same keys for every link-free node of a prompt,
so a prompt and a worker share a key exactly when the worker holds one of its models.

The dispatcher only ever offers idle workers, so a prompt never waits behind another while
a worker is free. Among them ``choose`` takes the one holding most of the prompt's models,
else the one with the least cached (least to evict), else the one idle longest.

How many workers to keep, and what each asks Ray for, follow from the cluster's resources
(``wanted_workers``, ``gpus_per_worker``), read again as machines join and leave.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from graph.cache import canonical_json

ROUTINGS = ("affinity", "random")


def is_link(value: Any) -> bool:
    """An API-format link: ``["node id", output index]``."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def node_key(class_type: str, inputs: dict[str, Any]) -> str | None:
    """The content key of a node with no linked input, else None."""
    if any(is_link(value) for value in inputs.values()):
        return None
    return f"{class_type}:{canonical_json(inputs)}"


def model_candidates(prompt: dict[str, Any]) -> dict[str, str]:
    """Key -> node id for each link-free node of an API-format prompt (the nodes that may load a model)."""
    keys: dict[str, str] = {}
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            continue
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        key = node_key(node["class_type"], inputs)
        if key is not None:
            keys[key] = str(node_id)
    return keys


def model_label(class_type: str, inputs: dict[str, Any]) -> str:
    """A readable name for /system_stats: the loader's first string input (a file name)."""
    for value in inputs.values():
        if isinstance(value, str):
            return f"{class_type}({value})"
    return class_type


@dataclass
class Candidate:
    """What routing knows of one idle worker."""

    name: str
    models: set[str] = field(default_factory=set)
    cached_bytes: int = 0
    idle_since: float = 0.0


def choose(idle: list[Candidate], prompt_keys: set[str], routing: str = "affinity",
           rng: random.Random | None = None) -> Candidate:
    """The idle worker for a prompt whose link-free nodes have ``prompt_keys``."""
    if not idle:
        raise ValueError("no idle worker")
    if routing == "random":
        return (rng or random).choice(idle)
    return max(idle, key=lambda c: (len(prompt_keys & c.models), -c.cached_bytes, -c.idle_since))


def gpus_per_worker(resources: dict[str, float], cpu_only: bool, configured: float | None) -> float:
    """The GPUs each worker asks Ray for: none with ``--cpu``; ``--ray-worker-gpus`` when given;
    else one (a whole device per worker) when the cluster has any GPU, else none."""
    if cpu_only:
        return 0.0
    if configured is not None:
        return configured
    return 1.0 if resources.get("GPU", 0) >= 1 else 0.0


def wanted_workers(resources: dict[str, float], fixed: int, cpus_each: float, gpus_each: float,
                   max_workers: int = 0) -> int:
    """How many workers to keep in a cluster with ``resources`` (Ray's totals: ``{"CPU": 8,
    "GPU": 2, ...}``). ``fixed`` (``--ray-workers``) > 0: that many. Else one per ``gpus_each``
    GPUs when workers use GPUs, else one, or with ``max_workers`` (``--ray-max-workers``) one per
    ``cpus_each`` CPUs; at least one, never more than ``max_workers`` when that is set."""
    if fixed > 0:
        return fixed
    if gpus_each > 0:
        count = math.floor(resources.get("GPU", 0) / gpus_each + 1e-9)
    elif max_workers > 0 and cpus_each > 0:
        count = math.floor(resources.get("CPU", 0) / cpus_each + 1e-9)
    else:
        count = max_workers if max_workers > 0 else 1
    count = max(count, 1)
    return min(count, max_workers) if max_workers > 0 else count
