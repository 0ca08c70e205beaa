"""Validation: every problem of a workflow, found in one pass, before anything runs.

Errors use ComfyUI's shape so existing clients can show them::

    node_errors = {node_id: {"errors": [{"type", "message", "details", "extra_info"}],
                             "dependent_outputs": [output node ids], "class_type": str}}

Only nodes that the requested outputs need are checked: a stray half-built node on the
canvas does not block the rest, as in ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graph.estimate import estimate_prompt, format_bytes
from graph.limits import PromptLimits
from graph.node import Input
from graph.plan import ExecutionPlan, make_plan, natural_key, topological_order
from graph.registry import NodeRegistry
from graph.workflow import Link, Workflow


@dataclass
class ValidationResult:
    """Outcome of validation; ``plan`` is set only when there are no errors."""

    error: dict[str, Any] | None = None
    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    plan: ExecutionPlan | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.node_errors

    def response(self) -> dict[str, Any]:
        """The HTTP 400 body of POST /prompt."""
        return {"error": self.error, "node_errors": self.node_errors}


def types_match(output_type: str, input_type: str) -> bool:
    """Whether a link from an output of ``output_type`` may feed ``input_type``.

    "*" matches anything; "A,B" is a union. A combo may be fed from a STRING or COMBO.
    """
    if output_type == "*" or input_type == "*":
        return True
    if input_type == "COMBO":
        return output_type in ("COMBO", "STRING")
    return not set(output_type.split(",")).isdisjoint(input_type.split(","))


def validate_workflow(
    workflow: Workflow, registry: NodeRegistry, targets: list[str] | None = None,
    runtime: Any = None, limits: PromptLimits | None = None,
) -> ValidationResult:
    """Checks a parsed workflow against the registry and plans it when valid.

    ``targets`` (ComfyUI's ``partial_execution_targets``) limits the outputs to run;
    by default every output node runs. ``runtime`` feeds computed combo choices (the
    files in the input or model folders). ``limits`` bounds string lengths and the
    estimated memory of the prompt (``graph.estimate``); a prompt over them gets a node
    error on the node at fault.
    """
    result = ValidationResult()
    if workflow.errors:
        result.error = _error("invalid_prompt", "; ".join(workflow.errors))
        return result

    nodes = workflow.nodes
    # As ComfyUI: a class that is not installed refuses the whole prompt, even where no output
    # needs it, and is named before "Prompt has no outputs" could hide an unknown output node.
    unknown_classes = _unknown_classes(workflow, registry)
    if targets is not None:
        unknown = [t for t in targets if not isinstance(t, str) or t not in nodes]
        if unknown:
            result.error = _error("invalid_prompt", f"partial_execution_targets names unknown nodes: {unknown}")
            return result
        outputs = list(dict.fromkeys(targets))
    else:
        outputs = []
        for node_id, spec in nodes.items():
            definition = registry.get(spec.class_type)
            if definition is not None and definition.output_node:
                outputs.append(node_id)
    result.outputs = outputs
    if not outputs and unknown_classes:
        result.error = _missing_class_error(unknown_classes)
        result.node_errors = {node_id: {"errors": _check_node(workflow, node_id, registry, runtime),
                                        "dependent_outputs": [], "class_type": class_type}
                              for node_id, class_type in unknown_classes}
        return result
    if not outputs:
        result.error = _error("prompt_no_outputs", "Prompt has no outputs",
                              "Add an output node such as SaveImage or PreviewImage.")
        return result

    needed, dependents = _needed_nodes(workflow, outputs)
    errors: dict[str, list[dict[str, Any]]] = {}
    max_text = limits.max_text_length if limits is not None else None
    for node_id in needed:
        node_errors = _check_node(workflow, node_id, registry, runtime, max_text)
        if node_errors:
            errors[node_id] = node_errors
    for node_id, _ in unknown_classes:  # those no output needs
        if node_id not in errors:
            errors[node_id] = _check_node(workflow, node_id, registry, runtime)
    order, cycles = topological_order(workflow, needed)
    for cycle in cycles:
        names = ", ".join(f"{n} ({nodes[n].class_type})" for n in cycle)
        for node_id in cycle:
            errors.setdefault(node_id, []).append(
                _error("dependency_cycle", f"Dependency cycle among nodes: {names}", cycle=list(cycle))
            )

    if not errors and limits is not None and limits.memory_bytes is not None:
        errors.update(_check_memory(workflow, registry, order, limits.memory_bytes))
    if errors:
        result.error = (_missing_class_error(unknown_classes) if unknown_classes
                        else _error("prompt_outputs_failed_validation", "Prompt outputs failed validation"))
        result.node_errors = {
            node_id: {
                "errors": node_errors,
                "dependent_outputs": sorted(dependents.get(node_id, ()), key=natural_key),
                "class_type": nodes[node_id].class_type,
            }
            for node_id, node_errors in errors.items()
        }
        return result
    definitions = {node_id: registry.definitions[workflow.nodes[node_id].class_type] for node_id in order}
    result.plan = make_plan(workflow, definitions, outputs, order)
    return result


def _missing_class_error(unknown: list[tuple[str, str]]) -> dict[str, Any]:
    node_id, class_type = unknown[0]
    more = f" (and {len(unknown) - 1} more node(s) of unknown types)" if len(unknown) > 1 else ""
    return _error("missing_node_type", f"Cannot execute because node {node_id} is of type {class_type!r}, "
                  f"which is not installed{more}", f"Node ID '#{node_id}'", node_id=node_id, class_type=class_type)


def _unknown_classes(workflow: Workflow, registry: NodeRegistry) -> list[tuple[str, str]]:
    """(node id, class) of every node whose class no loaded node provides, in id order."""
    return [(node_id, spec.class_type) for node_id, spec in sorted(workflow.nodes.items(), key=lambda i: natural_key(i[0]))
            if spec.class_type and registry.get(spec.class_type) is None]


def _needed_nodes(workflow: Workflow, outputs: list[str]) -> tuple[list[str], dict[str, set[str]]]:
    """Ancestors of the outputs (outputs included), and which outputs each one feeds."""
    nodes = workflow.nodes
    dependents: dict[str, set[str]] = {}
    order: list[str] = []
    for output in outputs:
        stack = [output]
        while stack:
            node_id = stack.pop()
            seen_by = dependents.setdefault(node_id, set())
            if output in seen_by:
                continue
            if not seen_by:
                order.append(node_id)
            seen_by.add(output)
            for value in nodes[node_id].inputs.values():
                if isinstance(value, Link) and value.source in nodes:
                    stack.append(value.source)
    return order, dependents


def _check_memory(workflow: Workflow, registry: NodeRegistry, order: list[str],
                  limit: int) -> dict[str, list[dict[str, Any]]]:
    estimators = {}
    for node_id in order:
        definition = registry.get(workflow.nodes[node_id].class_type)
        if definition is not None:
            estimators[node_id] = definition.cls.estimate
    over = estimate_prompt(workflow, order, estimators, limit)
    if over is None:
        return {}
    message = (f"This prompt would need about {format_bytes(over.total_bytes)} of memory, more than the "
               f"{format_bytes(limit)} this server allows one prompt; this node alone needs "
               f"{format_bytes(over.node_bytes)}")
    details = f"{over.cause}: {message}" if over.cause else message
    return {over.node_id: [_error("memory_estimate_too_large", message, details, input_name=over.cause,
                                  estimated_bytes=over.total_bytes, node_bytes=over.node_bytes,
                                  limit_bytes=limit)]}


def _check_node(workflow: Workflow, node_id: str, registry: NodeRegistry,
                runtime: Any, max_text: int | None = None) -> list[dict[str, Any]]:
    spec = workflow.nodes[node_id]
    errors = [_error(kind, message, input_name=name) for kind, message, name in spec.parse_errors]
    if not spec.class_type:
        # An empty class name ("class_type": "" or a UI node of type "") is an error even
        # when parsing found nothing else wrong: planning needs every node's definition.
        return errors or [_error("invalid_prompt", f"node {node_id} has no class_type")]
    definition = registry.get(spec.class_type)
    if definition is None:
        errors.append(_error("missing_node_type", f"Node type {spec.class_type!r} is not installed",
                             f"node {node_id} asks for {spec.class_type!r}, which no loaded node provides"))
        return errors
    # A DynamicCombo's inputs count only while its choice shows them, as that choice declares them.
    for name, inp in definition.selected_inputs(spec.inputs).items():
        if inp.hidden:
            continue
        if name not in spec.inputs:
            if not inp.optional:
                errors.append(_error("required_input_missing", "Required input is missing", name, input_name=name))
            continue
        value = spec.inputs[name]
        problem = _check_input(workflow, registry, inp, value, runtime)
        if problem is None and max_text is not None and isinstance(value, str) and len(value) > max_text:
            problem = "value_too_long", f"{len(value)} characters, more than the limit of {max_text}"
        if problem is None and inp.type == "INT" and isinstance(value, float):
            spec.inputs[name] = int(value)  # 64.0 from a JSON writer: the node receives 64, as in ComfyUI
        if problem:
            kind, message = problem
            errors.append(_error(kind, message, f"{name}: {message}", input_name=name,
                                 input_config=inp.spec(runtime), received_value=_jsonable(value)))
    return errors


def _check_input(workflow: Workflow, registry: NodeRegistry, inp: Input, value: Any,
                 runtime: Any) -> tuple[str, str] | None:
    if not isinstance(value, Link):
        return inp.check_constant(value, runtime)
    source = workflow.nodes.get(value.source)
    if source is None:
        return "bad_linked_input", f"linked to node {value.source}, which is not in the workflow"
    if not source.class_type:
        return None  # the source node carries its own error
    source_definition = registry.get(source.class_type)
    if source_definition is None:
        return None  # reported as missing_node_type on the source node
    outputs = source_definition.outputs
    if not 0 <= value.output_index < len(outputs):
        return "bad_linked_input", (
            f"linked to output {value.output_index} of node {value.source} ({source.class_type}), "
            f"which has {len(outputs)} output(s)"
        )
    output_type = outputs[value.output_index].type
    if not types_match(output_type, inp.type):
        return "return_type_mismatch", (
            f"expects {inp.type} but node {value.source} ({source.class_type}) output "
            f"{value.output_index} gives {output_type}"
        )
    return None


def _error(kind: str, message: str, details: str = "", *, input_name: str | None = None, **extra: Any) -> dict:
    extra_info: dict[str, Any] = {}
    if input_name is not None:
        extra_info["input_name"] = input_name
    extra_info.update(extra)
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Link):
        return [value.source, value.output_index]
    if isinstance(value, str) and len(value) > 256:
        return value[:256] + "..."  # an error echoes the start of a long text, not all of it
    return value
