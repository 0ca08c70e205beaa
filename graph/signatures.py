"""Cache keys of a plan's nodes, computed once per plan where they cannot change.

A node's signature (see ``graph.cache.signature``) depends on its class, its constant
inputs, the signatures it links to and, for nodes that read outside state, a fingerprint
taken at run time; a non-deterministic node gets a fresh random one every run. So a
node's signature is fixed for a given plan unless the node, or something upstream of it,
has a fingerprint or is non-deterministic. ``PlanSignatures`` computes the fixed ones
once (the plan object keeps it, and ``graph.memo`` keeps the plan) and recomputes only
the others on each run, in plan order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graph.cache import canonical_json, signature
from graph.context import NodeFailure
from graph.node import NodeDefinition
from graph.workflow import Link

if TYPE_CHECKING:
    from graph.plan import ExecutionPlan


@dataclass(frozen=True)
class _NodeKey:
    """The run-independent parts of one node's signature."""

    node_id: str
    definition: NodeDefinition
    constants: dict[str, Any]
    constants_json: str
    links: tuple[tuple[str, str, int], ...]  # (input name, source node id, output index)

    def sign(self, signatures: dict[str, str], fingerprint: str = "") -> str:
        upstream = sorted(f"{name}={signatures[source]}:{index}" for name, source, index in self.links)
        return signature(self.definition.name, self.constants_json, upstream, fingerprint)


class PlanSignatures:
    """Signatures of one plan's nodes: fixed ones computed here, the rest per run.

    ``fixed`` maps node ids to signatures that no run can change; ``per_run`` lists, in
    plan order, the nodes that have a fingerprint or are non-deterministic, and the nodes
    downstream of them.
    """

    def __init__(self, plan: ExecutionPlan) -> None:
        self.fixed: dict[str, str] = {}
        self.per_run: list[_NodeKey] = []
        changing: set[str] = set()
        for node_id in plan.order:
            key = _node_key(plan, node_id)
            definition = key.definition
            if (definition.not_deterministic or definition.has_fingerprint
                    or any(source in changing for _, source, _ in key.links)):
                changing.add(node_id)
                self.per_run.append(key)
            else:
                self.fixed[node_id] = key.sign(self.fixed)

    def compute(self, context: Any) -> dict[str, str]:
        """Every node's signature for one run; ``context`` is handed to ``fingerprint``.

        Raises ``NodeFailure`` naming the node whose ``fingerprint`` raised.
        """
        signatures = dict(self.fixed)
        for key in self.per_run:
            definition = key.definition
            fingerprint = ""
            if definition.not_deterministic:
                fingerprint = uuid.uuid4().hex
            elif definition.has_fingerprint:
                try:
                    fingerprint = canonical_json(definition.cls.fingerprint(context, **key.constants))
                except Exception as exc:
                    raise NodeFailure(key.node_id, exc) from exc
            signatures[key.node_id] = key.sign(signatures, fingerprint)
        return signatures


def plan_signatures(plan: ExecutionPlan) -> PlanSignatures:
    """The plan's ``PlanSignatures``, built on first use and kept on the plan."""
    found = plan.signatures
    if found is None:
        found = plan.signatures = PlanSignatures(plan)
    return found


def _node_key(plan: ExecutionPlan, node_id: str) -> _NodeKey:
    definition = plan.definitions[node_id]
    declared = definition.inputs
    constants: dict[str, Any] = {}
    links: list[tuple[str, str, int]] = []
    for name, value in plan.workflow.nodes[node_id].inputs.items():
        if name not in declared:
            continue  # undeclared inputs are ignored, so they must not change the key
        if type(value) is Link:
            links.append((name, value.source, value.output_index))
        else:
            constants[name] = value
    return _NodeKey(node_id, definition, constants, canonical_json(constants), tuple(links))
