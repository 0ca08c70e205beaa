"""Planning: the sub-DAG the requested outputs need, in a deterministic topological order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graph.node import NodeDefinition
from graph.workflow import Link, Workflow

if TYPE_CHECKING:
    import networkx as nx


@dataclass
class ExecutionPlan:
    """What to run: ``order`` lists every needed node, each after all of its sources.

    ``position`` maps a node id to its index in ``order``; the executor uses it to run
    any subset of nodes (e.g. those a lazy input asks for) in plan order. ``signatures``
    is the executor's ``graph.signatures.PlanSignatures``, built on the first run and kept
    with the plan, which ``graph.memo`` reuses for an unchanged document.
    """

    workflow: Workflow
    order: list[str]
    outputs: list[str]
    definitions: dict[str, NodeDefinition]
    position: dict[str, int]
    signatures: Any = field(default=None, repr=False, compare=False)


def dependency_graph(workflow: Workflow, node_ids: list[str]) -> nx.DiGraph:
    """Edges run from a source node to the node that consumes it.

    Nodes are inserted in natural id order ("2" before "10"), which makes the
    topological order deterministic for a given workflow.
    """
    import networkx as nx  # imported on first use: it costs a noticeable part of server start-up

    graph = nx.DiGraph()
    members = set(node_ids)
    ordered = sorted(node_ids, key=natural_key)
    graph.add_nodes_from(ordered)
    graph.add_edges_from(
        (value.source, node_id)
        for node_id in ordered
        for value in workflow.nodes[node_id].inputs.values()
        if isinstance(value, Link) and value.source in members
    )
    return graph


def topological_order(workflow: Workflow, node_ids: list[str]) -> tuple[list[str], list[list[str]]]:
    """Orders ``node_ids`` so every node follows its sources.

    Returns ``(order, cycles)``: when the nodes contain dependency cycles, ``order`` is
    empty and ``cycles`` lists each cycle as the sorted ids of its nodes.
    """
    import networkx as nx

    graph = dependency_graph(workflow, node_ids)
    try:
        return list(nx.topological_sort(graph)), []
    except nx.NetworkXUnfeasible:
        pass
    cycles = [
        sorted(component, key=natural_key)
        for component in nx.strongly_connected_components(graph)
        if len(component) > 1 or graph.has_edge(next(iter(component)), next(iter(component)))
    ]
    return [], sorted(cycles, key=lambda c: natural_key(c[0]))


def make_plan(workflow: Workflow, definitions: dict[str, NodeDefinition], outputs: list[str],
              order: list[str]) -> ExecutionPlan:
    """Bundles a validated workflow with its topological ``order`` and the definition of
    each node in it (``definitions``: node id -> its class's definition)."""
    assert set(definitions) >= set(order), "make_plan needs a definition for every node it runs"
    return ExecutionPlan(
        workflow=workflow,
        order=order,
        outputs=outputs,
        definitions={node_id: definitions[node_id] for node_id in order},
        position={node_id: index for index, node_id in enumerate(order)},
    )


def natural_key(node_id: str) -> tuple:
    """Sort key that puts "2" before "10" and numbers before other names."""
    return (0, int(node_id), "") if node_id.isascii() and node_id.isdigit() else (1, 0, node_id)
