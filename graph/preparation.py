"""Preparing a prompt: parse (API or UI format), validate and plan, in one call."""

from __future__ import annotations

import threading
from typing import Any

from graph.limits import Budget, PromptLimits, PromptTooLarge
from graph.memo import PreparedMemo, document_key
from graph.registry import NodeRegistry
from graph.ui_format import is_ui_format, ui_to_workflow
from graph.validate import ValidationResult, validate_workflow
from graph.workflow import Workflow, parse_api_workflow


def parse_workflow(document: Any, registry: NodeRegistry, budget: Budget | None = None,
                   runtime: Any = None) -> Workflow:
    """Parses either format: UI-format documents are converted with the registry's declarations
    (and ``runtime``, for the choices of an empty file combo).

    ``budget`` bounds the nodes and subgraph instances (``graph.limits``): a document over
    it raises ``PromptTooLarge``.
    """
    if is_ui_format(document):
        return ui_to_workflow(document, registry, budget, runtime)
    max_nodes = budget.limits.max_nodes if budget is not None else None
    if max_nodes is not None and isinstance(document, dict) and len(document) > max_nodes:
        raise PromptTooLarge(f"the workflow has {len(document)} nodes, more than the limit of {max_nodes}",
                             "max_nodes")
    return parse_api_workflow(document)


def prepare(document: Any, registry: NodeRegistry, targets: list[str] | None = None, runtime: Any = None, *,
            memo: PreparedMemo | None = None, limits: PromptLimits | None = None,
            cancel: threading.Event | None = None) -> ValidationResult:
    """Parse, validate and plan in one call; ``result.plan`` is set when the workflow is valid.

    ``runtime`` is the application's object handed to nodes at run time (folders, model
    paths); combo inputs with computed choices are checked against it. With a ``memo``
    (``graph.memo``; ``Engine`` keeps one), a valid API-format document is memoised:
    preparing the same document again re-checks only what can have changed and returns the
    same plan. The result and its plan are then shared between such calls: treat them as
    read-only.

    ``limits`` bounds the document (``PromptTooLarge`` is raised before the work it
    would cause) and its memory estimate (a node error); setting ``cancel`` from another
    thread stops a long conversion with ``PreparationCancelled``.
    """
    key = document_key(document, targets) if memo is not None and not is_ui_format(document) else None
    if key is not None:
        hit = memo.lookup(key, registry.definitions, runtime)
        if hit is not None:
            return hit
    workflow = parse_workflow(document, registry, Budget(limits, cancel), runtime)
    result = validate_workflow(workflow, registry, targets, runtime, limits)
    if key is not None and result.ok:
        memo.store(key, result, registry.definitions)
    return result
