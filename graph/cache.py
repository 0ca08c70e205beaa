"""Content-keyed output cache.

A node's ``signature`` is a digest of its class, its constant inputs (canonical JSON),
the signatures of the outputs it links to, and its fingerprint of outside state. It
never includes the node id, so the same subgraph under renumbered ids, or in another
workflow, is one cache entry. Entries are evicted least recently used first once their
estimated size passes a byte budget.

An output value may name a *pool* with a ``cache_pool`` attribute (model handles say
``"models"``). An entry holding such a value belongs to that pool; a pool may have its own
byte budget, within the overall one, and can be dropped on its own (``drop_pool``), which
is how POST /free unloads models without forgetting other outputs.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_BUDGET_BYTES = 8 * 1024**3
# An output (not a model) larger than this share of the budget is not kept after its prompt:
# holding it would evict everything else, and one huge request must not pin memory until /free.
DEFAULT_MAX_ENTRY_SHARE = 0.25
_SCALARS = (int, float, str, bool, bytes, type(None))


def canonical_json(value: Any) -> str:
    """A stable text form of a JSON-like value (sorted keys, no whitespace).

    Values JSON cannot express (tuples, NaN, odd objects) still get a stable form,
    because a constant must never make signature computation fail.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def signature(class_name: str, constants: str, upstream: list[str], fingerprint: str = "") -> str:
    """Digest of a node's content. ``constants`` is canonical JSON; ``upstream`` lists
    ``"<signature>:<output index>"`` for each linked input, in input-name order."""
    text = "\x1f".join((class_name, constants, ",".join(upstream), fingerprint))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass
class CacheEntry:
    """Outputs of one node execution: one list of items per output slot, plus its UI payload."""

    outputs: list[list[Any]]
    ui: dict[str, Any] | None
    size_bytes: int
    pool: str | None = None


def pool_of(outputs: list[list[Any]]) -> str | None:
    """The pool named by the first output item that has a ``cache_pool`` attribute, if any."""
    for items in outputs:
        for item in items:
            pool = getattr(item, "cache_pool", None)
            if isinstance(pool, str):
                return pool
    return None


def estimate_size(value: Any, _depth: int = 0) -> int:
    """Rough size in bytes of a node output.

    Tensors and arrays report ``nbytes``; model handles may define ``size_bytes()``;
    containers are summed. Good enough to keep the cache within its budget.
    """
    if type(value) in _SCALARS:
        return sys.getsizeof(value)
    if _depth > 8:
        return 0
    size_method = getattr(value, "size_bytes", None)
    if callable(size_method):
        try:
            return int(size_method())
        except Exception:
            return 0
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, dict):
        return sum(estimate_size(v, _depth + 1) for v in value.values()) + 64
    if isinstance(value, (list, tuple)):
        return sum(estimate_size(v, _depth + 1) for v in value) + 56
    try:
        return sys.getsizeof(value)
    except TypeError:
        return 64


class OutputCache:
    """LRU cache of node outputs bounded by a byte budget. Thread-safe.

    ``pool_budgets`` bounds pools separately, e.g. ``{"models": 6 * 1024**3}``: a pool over
    its budget evicts its own least recently used entries. An entry outside any pool larger
    than ``max_entry_share`` of the budget is not stored at all.
    """

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES,
                 on_evict: Callable[[str, CacheEntry], None] | None = None,
                 pool_budgets: dict[str, int] | None = None,
                 max_entry_share: float = DEFAULT_MAX_ENTRY_SHARE) -> None:
        self.budget_bytes = budget_bytes
        self.max_entry_bytes = int(budget_bytes * max_entry_share)
        self.pool_budgets = dict(pool_budgets or {})
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._total = 0
        self._pool_totals: dict[str, int] = {}
        self._lock = threading.Lock()
        self._on_evict = on_evict

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def put(self, key: str, outputs: list[list[Any]], ui: dict[str, Any] | None) -> CacheEntry:
        entry = CacheEntry(outputs, ui, estimate_size(outputs) + (estimate_size(ui) if ui else 0), pool_of(outputs))
        if entry.pool is None and entry.size_bytes > self.max_entry_bytes:
            return entry  # the running prompt holds its own reference; the cache keeps none
        with self._lock:
            self._remove(key)
            self._entries[key] = entry
            self._total += entry.size_bytes
            if entry.pool is not None:
                self._pool_totals[entry.pool] = self._pool_totals.get(entry.pool, 0) + entry.size_bytes
            self._evict_over_budget(keep=key, pool=entry.pool)
        return entry

    def _evict_over_budget(self, keep: str, pool: str | None) -> None:
        # The newest entry stays even if it alone exceeds the budget: its consumers
        # in the running prompt still need it.
        pool_budget = self.pool_budgets.get(pool) if pool is not None else None
        if pool_budget is not None and self._pool_totals[pool] > pool_budget:
            excess, victims = self._pool_totals[pool] - pool_budget, []
            for key, entry in self._entries.items():  # oldest first
                if excess <= 0:
                    break
                if entry.pool == pool and key != keep:
                    victims.append(key)
                    excess -= entry.size_bytes
            for key in victims:
                self._evict(key)
        while self._total > self.budget_bytes and len(self._entries) > 1:
            key = next(iter(self._entries))
            if key == keep:
                self._entries.move_to_end(key)
                continue
            self._evict(key)

    def _evict(self, key: str) -> None:
        entry = self._remove(key)
        if entry is not None and self._on_evict:
            self._on_evict(key, entry)

    def _remove(self, key: str) -> CacheEntry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._total -= entry.size_bytes
            if entry.pool is not None:
                self._pool_totals[entry.pool] -= entry.size_bytes
        return entry

    def drop_pool(self, pool: str) -> int:
        """Removes every entry of ``pool``; returns how many were removed."""
        with self._lock:
            keys = [key for key, entry in self._entries.items() if entry.pool == pool]
            for key in keys:
                self._remove(key)
        return len(keys)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._total = 0
            self._pool_totals.clear()

    def pool_bytes(self, pool: str) -> int:
        return self._pool_totals.get(pool, 0)

    @property
    def total_bytes(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._entries)
