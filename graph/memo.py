"""Memo of prepared plans: an unchanged document is not parsed, validated or planned again.

``prepare`` keys a valid API-format document by an exact binary form of its value (plus
the targets). A hit returns the memoised plan only after re-checking what can change
between two calls with the same document:

- the registry: each class the document names must still resolve to the same
  definition (or still be missing), so a plugin added or replaced later is seen;
- inputs checked against outside state: combo inputs whose choices are computed from the
  runtime (model files, input images) and inputs whose declaration overrides
  ``check_constant`` are checked again, so a deleted model file is an error, not a hit.

Fingerprints and non-deterministic nodes need nothing here: the executor evaluates them
on every run (``graph.signatures``). Invalid documents are never memoised; a failed
re-check falls back to a full ``prepare``, which reports the error.
"""

from __future__ import annotations

import hashlib
import marshal
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graph.node import Input, NodeDefinition
from graph.validate import ValidationResult
from graph.workflow import Link

DEFAULT_MEMO_ENTRIES = 32


def document_key(document: Any, targets: list[str] | None) -> bytes | None:
    """A digest of the exact value of ``(document, targets)``, or None when it has none.

    ``marshal`` (format 2, which has no back-references, so equal values give equal
    bytes) encodes only exact built-in types and tells them apart (``1``, ``1.0`` and
    ``True``; a list and a tuple); any other object makes it raise, and such documents
    are not memoised.
    """
    try:
        raw = marshal.dumps((document, targets), 2)
    except (ValueError, TypeError):
        return None
    return hashlib.blake2b(raw, digest_size=20).digest()


@dataclass(frozen=True)
class _Entry:
    result: ValidationResult
    classes: dict[str, NodeDefinition | None]  # every class_type the document names -> its definition
    rechecks: tuple[tuple[Input, Any], ...]  # (declared input, constant) pairs that depend on outside state


class PreparedMemo:
    """A small LRU memo from document keys to valid ``ValidationResult``s. Thread-safe."""

    def __init__(self, max_entries: int = DEFAULT_MEMO_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, key: bytes, definitions: Mapping[str, NodeDefinition], runtime: Any) -> ValidationResult | None:
        """The memoised result for ``key`` if it is still valid for these definitions (the
        registry's, by class name) and this runtime."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        if entry is None:
            return None
        if any(definitions.get(name) is not definition for name, definition in entry.classes.items()):
            return None
        if any(inp.check_constant(value, runtime) is not None for inp, value in entry.rechecks):
            return None
        return ValidationResult(outputs=list(entry.result.outputs), plan=entry.result.plan)

    def store(self, key: bytes, result: ValidationResult, definitions: Mapping[str, NodeDefinition]) -> None:
        """Memoises a valid result (an invalid one is ignored)."""
        plan = result.plan
        if not result.ok or plan is None:
            return
        classes = {spec.class_type: definitions.get(spec.class_type)
                   for spec in plan.workflow.nodes.values()}
        rechecks = []
        for node_id in plan.order:
            declared = plan.definitions[node_id].inputs
            for name, value in plan.workflow.nodes[node_id].inputs.items():
                inp = declared.get(name)
                if inp is not None and not isinstance(value, Link) and _reads_outside_state(inp):
                    rechecks.append((inp, value))
        entry = _Entry(result, classes, tuple(rechecks))
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _reads_outside_state(inp: Input) -> bool:
    return not inp.hidden and (callable(inp.choices) or type(inp).check_constant is not Input.check_constant)
