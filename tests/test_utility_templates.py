"""ComfyUI's own saved workflows (PyPI ``comfyui-workflow-templates-json``) with the
primitive and utility nodes convert and validate unchanged.

Every saved node of these types in the templates (top level and inside subgraphs) is
cut out with stand-in sources for its links, converted from the UI format and
validated. Where the package's tooling recorded ``widgets_values_named`` (ComfyUI's own
names for the positional ``widgets_values``), the converted inputs must equal it: an
oracle independent of our declarations.
"""

from __future__ import annotations

import pytest

from graph import prepare
from graph.ui_format import ui_to_workflow
from tests.utility_support import isolate, make_registry, saved_nodes, templates_folder

NODE_TYPES = (
    "PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveBoolean",
    "ComfySwitchNode", "PreviewAny", "GetImageSize", "BatchImagesNode", "ImageFromBatch", "ImageStitch",
    "ResizeImageMaskNode", "StringConcatenate", "StringReplace", "ComfyMathExpression", "MaskPreview",
    "ImageCompare", "SaveImageAdvanced",
)

pytestmark = pytest.mark.skipif(templates_folder() is None, reason="comfyui-workflow-templates-json is not installed")


@pytest.fixture(scope="module")
def registry():
    return make_registry()


def test_the_templates_use_every_node_type():
    found = {node["type"] for _, node in saved_nodes(frozenset(NODE_TYPES))}
    assert found == set(NODE_TYPES)


@pytest.mark.parametrize("node_type", NODE_TYPES)
def test_saved_nodes_convert_and_validate(registry, node_type):
    saved = saved_nodes(frozenset([node_type]))
    definition = registry.get(node_type)
    checked_named = 0
    for file_name, node in saved:
        document, sources = isolate(node)
        for cls in sources:
            if cls.node_name not in registry:
                registry.register(cls)
        workflow = ui_to_workflow(document, registry)
        spec = workflow.nodes["1"]
        where = f"{file_name} node {node.get('id')}"
        assert set(spec.inputs) <= set(definition.inputs), (where, spec.inputs)
        result = prepare(document, registry, ["1"])
        errors = (result.node_errors.get("1") or {}).get("errors", [])
        # Some templates keep a node whose image input is left unconnected (ComfyUI would
        # refuse it too, were it run); any other error is ours.
        unexpected = [error for error in errors if not (
            error["type"] == "required_input_missing" and error["details"] not in spec.inputs
            and not definition.inputs[error["details"]].is_widget)]
        assert not unexpected and (result.ok or errors), (where, result.response())
        named = node.get("widgets_values_named")
        if isinstance(named, dict):
            linked = {entry.get("name") for entry in node.get("inputs") or [] if entry.get("link") is not None}
            for name, value in named.items():
                if name in definition.widget_names and name not in linked:
                    assert spec.inputs.get(name) == value, (where, name, spec.inputs)
                    checked_named += 1
    assert saved
    if any(set(node.get("widgets_values_named") or ()) & set(definition.widget_names) for _, node in saved):
        assert checked_named, "no named widget value was compared"
