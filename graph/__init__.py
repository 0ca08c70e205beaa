"""Latentgraph's engine: node declarations, workflows, validation, planning, caching, execution.

One path for every entry point (server, CLI, tests)::

    registry = build_registry()
    checked = prepare(document, registry)          # parse (API or UI format) + validate + plan
    if checked.ok:
        result = Executor().execute(checked.plan, on_event=print)

Nothing here imports torch, aiohttp or ``nodes``: nodes are plugins registered with it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from graph.cache import OutputCache
from graph.context import ExecutionContext, Folders, Interrupted
from graph.executor import ExecutionResult, Executor
from graph.limits import Budget, PreparationCancelled, PromptLimits, PromptTooLarge
from graph.memo import document_key
from graph.node import Input, Node, NodeDefinition, NodeResult, Output
from graph.plan import ExecutionPlan
from graph.registry import NodeRegistry, build_registry
from graph.ui_format import is_ui_format, ui_to_api, ui_to_workflow
from graph.validate import ValidationResult, validate_workflow
from graph.workflow import Link, Workflow, parse_api_workflow

__all__ = [
    "ExecutionContext", "ExecutionPlan", "ExecutionResult", "Executor", "Folders", "Input", "Interrupted",
    "Link", "Node", "NodeDefinition", "NodeRegistry", "NodeResult", "Output", "OutputCache",
    "PreparationCancelled", "PromptLimits", "PromptTooLarge", "ValidationResult", "Workflow", "build_registry", "is_ui_format", "parse_workflow", "prepare",
    "ui_to_api", "ui_to_workflow", "validate_workflow", "parse_api_workflow",
]


def parse_workflow(document: Any, registry: NodeRegistry, budget: Budget | None = None,
                   services: Mapping[str, Any] | None = None) -> Workflow:
    """Parses either format: UI-format documents are converted with the registry's declarations
    (and ``services``, for the choices of an empty file combo).

    ``budget`` bounds the nodes and subgraph instances (``graph.limits``): a document over
    it raises ``PromptTooLarge``.
    """
    if is_ui_format(document):
        return ui_to_workflow(document, registry, budget, services)
    max_nodes = budget.limits.max_nodes if budget is not None else None
    if max_nodes is not None and isinstance(document, dict) and len(document) > max_nodes:
        raise PromptTooLarge(f"the workflow has {len(document)} nodes, more than the limit of {max_nodes}",
                             "max_nodes")
    return parse_api_workflow(document)


def prepare(document: Any, registry: NodeRegistry, targets: list[str] | None = None,
            services: Mapping[str, Any] | None = None, *, memo: bool = True,
            limits: PromptLimits | None = None, cancel: threading.Event | None = None) -> ValidationResult:
    """Parse, validate and plan in one call; ``result.plan`` is set when the workflow is valid.

    ``services`` is the mapping handed to nodes at run time (folders, model paths); combo
    inputs with computed choices are checked against it. A valid API-format document is
    memoised in ``registry.memo`` (see ``graph.memo``): preparing the same document again
    re-checks only what can have changed and returns the same plan; ``memo=False`` skips it.
    The result and its plan are shared between such calls: treat them as read-only.

    ``limits`` bounds the document (``PromptTooLarge`` is raised before the work it
    would cause) and its memory estimate (a node error); setting ``cancel`` from another
    thread stops a long conversion with ``PreparationCancelled``.
    """
    key = document_key(document, targets) if memo and not is_ui_format(document) else None
    if key is not None:
        hit = registry.memo.lookup(key, registry, services)
        if hit is not None:
            return hit
    workflow = parse_workflow(document, registry, Budget(limits, cancel), services)
    result = validate_workflow(workflow, registry, targets, services, limits)
    if key is not None and result.ok:
        registry.memo.store(key, result, registry)
        if targets is None:
            # Naming every output node as the targets plans the same: the server queues a prompt
            # with its outputs listed, and its worker prepares it again with them.
            registry.memo.store(document_key(document, result.outputs) or key, result, registry)
    return result
