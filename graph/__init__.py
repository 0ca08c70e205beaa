"""Latentgraph's engine: node declarations, workflows, validation, planning, caching, execution.

One path for every entry point (server, CLI, tests)::

    engine = Engine(build_registry(), runtime)     # runtime: the nodes' (nodes.make_runtime)
    checked = engine.prepare(document)             # parse (API or UI format) + validate + plan
    if checked.ok:
        result = engine.execute(checked.plan, on_event=print)

Nothing here imports torch, aiohttp or ``nodes``: nodes are plugins registered with it.
"""

from __future__ import annotations

from graph.cache import OutputCache
from graph.context import ExecutionContext, Folders, Interrupted
from graph.engine import Engine
from graph.executor import ExecutionResult, Executor
from graph.limits import PreparationCancelled, PromptLimits, PromptTooLarge
from graph.node import Input, Node, NodeDefinition, NodeResult, Output
from graph.plan import ExecutionPlan
from graph.preparation import parse_workflow, prepare
from graph.registry import NodeRegistry, build_registry
from graph.ui_format import is_ui_format, ui_to_api, ui_to_workflow
from graph.validate import ValidationResult, validate_workflow
from graph.workflow import Link, Workflow, parse_api_workflow

__all__ = [
    "Engine", "ExecutionContext", "ExecutionPlan", "ExecutionResult", "Executor", "Folders", "Input", "Interrupted",
    "Link", "Node", "NodeDefinition", "NodeRegistry", "NodeResult", "Output", "OutputCache",
    "PreparationCancelled", "PromptLimits", "PromptTooLarge", "ValidationResult", "Workflow", "build_registry", "is_ui_format", "parse_workflow", "prepare",
    "ui_to_api", "ui_to_workflow", "validate_workflow", "parse_api_workflow",
]
