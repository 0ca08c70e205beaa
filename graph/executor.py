"""The executor: runs a plan, serving unchanged nodes from the cache and emitting events.

Execution is demand-driven over the plan's topological order. Starting from the
outputs, it walks links backwards and stops at nodes whose signature is cached, so a
fully cached prompt touches only its outputs, and changing a seed re-runs only the
sampler and what follows. Lazy inputs are computed only when a node asks for them.

Every value between nodes travels as a list of items. A node whose inputs carry
several items is called once per item (shorter lists repeat their last item), unless
the input is declared ``is_list``, in which case it receives the whole list.
"""

from __future__ import annotations

import contextlib
import threading
import traceback
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from graph.cache import OutputCache
from graph.context import EventCallback, ExecutionContext, Folders, Interrupted, NodeFailure, timestamp_ms
from graph.node import Node, NodeDefinition, NodeResult
from graph.plan import ExecutionPlan
from graph.signatures import plan_signatures
from graph.workflow import Link

# Events kept in a prompt's history ("messages"), as ComfyUI does.
_HISTORY_EVENTS = ("execution_start", "execution_cached", "execution_success", "execution_error",
                   "execution_interrupted")


@dataclass
class ExecutionResult:
    """How a prompt ended: ``status`` is "success", "error" or "interrupted"."""

    status: str
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


class Executor:
    """Runs plans one at a time, sharing one output cache between prompts."""

    def __init__(
        self,
        cache: OutputCache | None = None,
        *,
        folders: Folders | None = None,
        runtime: Any = None,
        run_context: Callable[[], AbstractContextManager] | None = None,
    ) -> None:
        self.cache = cache if cache is not None else OutputCache()
        self.folders = folders or Folders()
        self.runtime = runtime  # the application's object, handed to nodes as context.runtime
        # e.g. torch.inference_mode, supplied by the application so graph/ never imports torch.
        self.run_context = run_context or contextlib.nullcontext

    def execute(
        self,
        plan: ExecutionPlan,
        *,
        prompt_id: str | None = None,
        on_event: EventCallback | None = None,
        interrupt: threading.Event | None = None,
        extra_data: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """Runs ``plan``; never raises for node failures or interrupts (see the result)."""
        run = _PromptRun(self, plan, prompt_id or uuid.uuid4().hex, on_event, interrupt, extra_data)
        with self.run_context():
            return run.run()


class _PromptRun:
    """State of one prompt's execution."""

    def __init__(self, executor: Executor, plan: ExecutionPlan, prompt_id: str,
                 on_event: EventCallback | None, interrupt: threading.Event | None,
                 extra_data: dict[str, Any] | None) -> None:
        self.cache = executor.cache
        self.plan = plan
        self.nodes = plan.workflow.nodes
        self.prompt_id = prompt_id
        self.result = ExecutionResult(status="success")
        self._on_event = on_event
        self.context = ExecutionContext(
            prompt_id=prompt_id,
            emit=self.emit,
            interrupt=interrupt or threading.Event(),
            folders=executor.folders,
            workflow=plan.workflow,
            extra_data=extra_data or {},
            runtime=executor.runtime,
        )
        self.values: dict[str, list[list[Any]]] = {}
        self.signatures: dict[str, str] = {}
        self.current: str | None = None

    def emit(self, event: str, data: dict[str, Any]) -> None:
        if event in _HISTORY_EVENTS:
            self.result.messages.append([event, data])
        if self._on_event is not None:
            self._on_event(event, data)

    def run(self) -> ExecutionResult:
        self.emit("execution_start", {"prompt_id": self.prompt_id, "timestamp": timestamp_ms()})
        try:
            self._compute_signatures()
            self._ensure(self.plan.outputs, first=True)
        except Interrupted:
            self.result.status = "interrupted"
            node = self.current
            self.emit("execution_interrupted", interrupted_event(
                self.prompt_id, node_id=node, node_type=self.nodes[node].class_type if node else None,
                executed=list(self.result.executed)))
            return self.result
        except NodeFailure as failure:
            self._report_failure(failure)
            return self.result
        # ComfyUI's host, not its executor, then sends ``executing`` with node null (the
        # worker, after writing the history); the executor's last event is the outcome.
        self.emit("execution_success", {"prompt_id": self.prompt_id, "timestamp": timestamp_ms()})
        return self.result

    def _compute_signatures(self) -> None:
        self.signatures = plan_signatures(self.plan).compute(self.context)

    def _ensure(self, targets: list[str], first: bool = False) -> None:
        """Makes the outputs of ``targets`` available: from the cache, or by running them
        and whatever uncached nodes they strictly depend on, in plan order.

        The ``first`` call (the prompt's outputs) reports in ``execution_cached`` every node of
        the prompt that it will not run, cached or not needed, as ComfyUI does: clients count
        a prompt's progress as (cached + executed) / all its nodes."""
        to_run: set[str] = set()
        newly_cached: list[str] = []
        stack = [t for t in targets if t not in self.values]
        while stack:
            node_id = stack.pop()
            if node_id in self.values or node_id in to_run:
                continue
            entry = self.cache.get(self.signatures[node_id])
            if entry is not None:
                self.values[node_id] = entry.outputs
                newly_cached.append(node_id)
                if entry.ui is not None:
                    self.result.outputs[node_id] = entry.ui
                continue
            to_run.add(node_id)
            definition = self.plan.definitions[node_id]
            for name, value in self.nodes[node_id].inputs.items():
                if isinstance(value, Link):
                    declared = definition.inputs.get(name)
                    if declared is not None and not declared.lazy:
                        stack.append(value.source)
        not_run = newly_cached
        if first:
            position = self.plan.position
            not_run = sorted((node_id for node_id in self.nodes if node_id not in to_run),
                             key=lambda node_id: (position.get(node_id, len(position)), node_id))
        self.result.cached.extend(newly_cached)
        if not_run:
            self.emit("execution_cached", {"nodes": not_run, "prompt_id": self.prompt_id,
                                           "timestamp": timestamp_ms()})
        for node_id in newly_cached:
            ui = self.result.outputs.get(node_id)
            if ui is not None:
                self.emit("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                       "prompt_id": self.prompt_id})
        position = self.plan.position
        for node_id in sorted(to_run, key=position.__getitem__):
            if node_id not in self.values:  # a lazy input of an earlier node may have run it
                self._run_node(node_id)

    def _run_node(self, node_id: str) -> None:
        self.current = node_id
        self.context.check_interrupt()
        definition = self.plan.definitions[node_id]
        self.context.node_id = node_id
        self.emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id})
        instance = definition.cls(self.context)
        try:
            if any(inp.lazy for inp in definition.inputs.values()):
                self._resolve_lazy_inputs(node_id, definition, instance)
            outputs, ui = self._call(node_id, definition, instance)
        except (Interrupted, NodeFailure, KeyboardInterrupt):
            raise  # Ctrl+C stays the CLI's to handle
        except BaseException as exc:  # SystemExit from a node fails the node, not the process
            raise NodeFailure(node_id, exc) from exc
        self.values[node_id] = outputs
        self.cache.put(self.signatures[node_id], outputs, ui)
        self.result.executed.append(node_id)
        if ui is not None:
            self.result.outputs[node_id] = ui
            self.emit("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                   "prompt_id": self.prompt_id})

    def _resolve_lazy_inputs(self, node_id: str, definition: NodeDefinition, instance: Node) -> None:
        spec = self.nodes[node_id]
        while True:
            available = {name: items[0] if items else None
                         for name, items in self._input_lists(spec.inputs, definition).items()}
            for name, inp in definition.inputs.items():
                if inp.lazy:
                    available.setdefault(name, None)
            wanted = instance.check_lazy_status(**available)
            sources = [
                spec.inputs[name].source
                for name in wanted
                if isinstance(spec.inputs.get(name), Link) and spec.inputs[name].source not in self.values
            ]
            if not sources:
                return
            self._ensure(sources)
            self.current = node_id
            self.context.node_id = node_id

    def _input_lists(self, inputs: dict[str, Any], definition: NodeDefinition) -> dict[str, list[Any]]:
        """Each available declared input as a list of items (a constant is one item)."""
        lists: dict[str, list[Any]] = {}
        for name, value in inputs.items():
            if name not in definition.inputs:
                continue
            if isinstance(value, Link):
                produced = self.values.get(value.source)
                if produced is None:
                    continue  # a lazy input not (yet) computed
                lists[name] = produced[value.output_index]
            else:
                lists[name] = [value]
        return lists

    def _call(self, node_id: str, definition: NodeDefinition, instance: Node) -> tuple[list[list[Any]], dict | None]:
        lists = self._input_lists(self.nodes[node_id].inputs, definition)
        if definition.simple_io and all(len(items) == 1 for items in lists.values()):
            # The common case: one item per input, no list inputs or outputs: one call.
            values, ui = _unpack(instance.execute(**{name: items[0] for name, items in lists.items()}), definition)
            return [[value] for value in values], ui
        whole = {name: items for name, items in lists.items() if definition.inputs[name].is_list}
        mapped = {name: items for name, items in lists.items() if not definition.inputs[name].is_list}
        for name, inp in definition.inputs.items():
            if inp.lazy and name not in lists:
                mapped[name] = [None]
        calls = max((len(items) for items in mapped.values()), default=1)
        if any(not items for items in mapped.values()):
            calls = 0
        declared = definition.outputs
        outputs: list[list[Any]] = [[] for _ in declared]
        ui: dict[str, Any] | None = None
        for index in range(calls):
            kwargs = dict(whole)
            for name, items in mapped.items():
                kwargs[name] = items[index] if index < len(items) else items[-1]
            values, call_ui = _unpack(instance.execute(**kwargs), definition)
            for slot, (value, output) in enumerate(zip(values, declared, strict=True)):
                if output.is_list:
                    if not isinstance(value, (list, tuple)):
                        raise TypeError(f"output {output.name!r} is declared as a list but got {type(value).__name__}")
                    outputs[slot].extend(value)
                else:
                    outputs[slot].append(value)
            if call_ui is not None:
                ui = _merge_ui(ui, call_ui)
        return outputs, ui

    def _report_failure(self, failure: NodeFailure) -> None:
        node_id = failure.node_id
        original = failure.original
        spec = self.nodes[node_id]
        error = error_event(
            self.prompt_id, str(original) or type(original).__name__,
            f"{type(original).__module__}.{type(original).__qualname__}", node_id=node_id,
            node_type=spec.class_type, executed=list(self.result.executed),
            trace=traceback.format_exception(type(original), original, original.__traceback__),
            inputs={name: _short_repr(value) for name, value in spec.inputs.items()}, outputs=list(self.values))
        self.result.status = "error"
        self.result.error = error
        self.emit("execution_error", error)


def error_event(prompt_id: str, message: str, kind: str, *, node_id: str | None = None,
                node_type: str | None = None, executed: list[str] | None = None, trace: list[str] | None = None,
                inputs: dict[str, str] | None = None, outputs: list[str] | None = None) -> dict[str, Any]:
    """ComfyUI's ``execution_error`` data: a node's failure, or (``node_id`` None) one the host
    reports for the whole prompt (a dead worker, an unreadable queue row)."""
    return {"prompt_id": prompt_id, "node_id": node_id, "node_type": node_type, "executed": executed or [],
            "exception_message": message, "exception_type": kind, "traceback": trace or [],
            "current_inputs": inputs or {}, "current_outputs": outputs or [], "timestamp": timestamp_ms()}


def interrupted_event(prompt_id: str, *, node_id: str | None = None, node_type: str | None = None,
                      executed: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """ComfyUI's ``execution_interrupted`` data; ``extra`` (e.g. the host's ``reason``) follows it."""
    return {"prompt_id": prompt_id, "node_id": node_id, "node_type": node_type, "executed": executed or [],
            "timestamp": timestamp_ms(), **extra}


def failed_status(event: str, data: dict[str, Any]) -> dict[str, Any]:
    """The history ``status`` of a prompt that ended with ``event`` alone (the host's report)."""
    return {"status_str": "error", "completed": False, "messages": [[event, data]]}


def _unpack(returned: Any, definition: NodeDefinition) -> tuple[tuple, dict | None]:
    """``execute``'s return value -> (one value per declared output, UI payload or None)."""
    if isinstance(returned, NodeResult):
        values, ui = tuple(returned.outputs), returned.ui
    elif returned is None:
        values, ui = (), None
    elif isinstance(returned, (tuple, list)):
        values, ui = tuple(returned), None
    else:
        raise TypeError(f"execute must return a tuple or NodeResult, got {type(returned).__name__}")
    if len(values) != len(definition.outputs):
        raise TypeError(f"{definition.name}.execute returned {len(values)} value(s) "
                        f"but declares {len(definition.outputs)} output(s)")
    return values, ui


def _merge_ui(ui: dict | None, more: dict) -> dict:
    if ui is None:
        return dict(more)
    for key, value in more.items():
        if isinstance(value, list) and isinstance(ui.get(key), list):
            ui[key] = ui[key] + value
        else:
            ui[key] = value
    return ui


def _short_repr(value: Any) -> str:
    text = repr([value.source, value.output_index]) if isinstance(value, Link) else repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
