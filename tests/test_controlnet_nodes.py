"""The ControlNet nodes' declarations against ComfyUI's, the Canny node, and the ControlNet
nodes of ComfyUI's own saved templates (PyPI ``comfyui-workflow-templates-json``)."""

from __future__ import annotations

import pytest
import torch

from graph import prepare
from graph.ui_format import ui_to_workflow
from nodes.controlnet_nodes import Canny
from tests.utility_support import isolate, make_registry, saved_nodes, templates_folder

# ComfyUI 0.3.64's declarations (nodes.py, comfy_extras/nodes_canny.py): input -> (type, default, min, max)
COMFY = {
    "ControlNetLoader": {"control_net_name": ("COMBO", None, None, None)},
    "DiffControlNetLoader": {"model": ("MODEL", None, None, None), "control_net_name": ("COMBO", None, None, None)},
    "ControlNetApply": {"conditioning": ("CONDITIONING", None, None, None),
                        "control_net": ("CONTROL_NET", None, None, None), "image": ("IMAGE", None, None, None),
                        "strength": ("FLOAT", 1.0, 0.0, 10.0)},
    "ControlNetApplyAdvanced": {
        "positive": ("CONDITIONING", None, None, None), "negative": ("CONDITIONING", None, None, None),
        "control_net": ("CONTROL_NET", None, None, None), "image": ("IMAGE", None, None, None),
        "strength": ("FLOAT", 1.0, 0.0, 10.0), "start_percent": ("FLOAT", 0.0, 0.0, 1.0),
        "end_percent": ("FLOAT", 1.0, 0.0, 1.0), "vae": ("VAE", None, None, None)},
    "Canny": {"image": ("IMAGE", None, None, None), "low_threshold": ("FLOAT", 0.4, 0.01, 0.99),
              "high_threshold": ("FLOAT", 0.8, 0.01, 0.99)},
}
OUTPUTS = {"ControlNetLoader": ["CONTROL_NET"], "DiffControlNetLoader": ["CONTROL_NET"],
           "ControlNetApply": ["CONDITIONING"], "ControlNetApplyAdvanced": ["CONDITIONING", "CONDITIONING"],
           "Canny": ["IMAGE"]}

CATEGORIES = {"ControlNetLoader": "loaders", "DiffControlNetLoader": "loaders",
              "ControlNetApply": "conditioning/controlnet", "ControlNetApplyAdvanced": "conditioning/controlnet",
              "Canny": "image/preprocessors"}


@pytest.fixture(scope="module")
def registry():
    return make_registry()


@pytest.mark.parametrize("name", COMFY)
def test_declarations_are_comfyuis(registry, name):
    definition = registry.get(name)
    assert list(definition.inputs) == list(COMFY[name])
    for input_name, (kind, default, low, high) in COMFY[name].items():
        spec = definition.inputs[input_name]
        if kind != "COMBO":
            assert spec.type == kind, input_name
        if default is not None:
            assert (spec.default, spec.min, spec.max) == (default, low, high), input_name
    assert definition.inputs["vae"].optional if name == "ControlNetApplyAdvanced" else True
    assert [o.type for o in definition.outputs] == OUTPUTS[name]
    assert definition.category == CATEGORIES[name] and definition.deprecated == (name == "ControlNetApply")
    if name == "ControlNetApplyAdvanced":
        assert [o.name for o in definition.outputs] == ["positive", "negative"]


def _square(size=64):
    image = torch.zeros(1, size, size, 3)
    image[:, 20:44, 16:48] = 1.0
    return image


def test_canny_finds_a_squares_outline():
    (edges,) = Canny().execute(_square(), 0.4, 0.8)
    assert edges.shape == (1, 64, 64, 3) and torch.equal(edges[..., 0], edges[..., 2])
    assert set(edges.unique().tolist()) <= {0.0, 1.0}
    on = edges[0, :, :, 0] > 0
    assert on[18:23, 16:48].any() and on[41:46, 16:48].any() and on[20:44, 14:19].any()  # each side found
    assert not on[26:38, 22:42].any() and not on[:12].any() and not on[:, :10].any()  # nothing inside or far off


def test_canny_thresholds_select_stronger_edges():
    ramp = torch.linspace(0, 1, 64)[None, None, :, None].expand(1, 64, 64, 3).clone()
    image = ramp * 0.3
    image[:, 20:44, 16:48] = 1.0  # one strong edge, and a weak gradient everywhere
    weak = Canny().execute(image, 0.01, 0.02)[0][..., 0].sum()
    strong = Canny().execute(image, 0.5, 0.9)[0][..., 0].sum()
    assert 0 < strong < weak
    with pytest.raises(ValueError, match="low_threshold"):
        Canny().execute(image, 0.9, 0.5)


pytestmark_templates = pytest.mark.skipif(templates_folder() is None,
                                          reason="comfyui-workflow-templates-json is not installed")


@pytestmark_templates
@pytest.mark.parametrize("node_type", ["ControlNetLoader", "ControlNetApplyAdvanced", "Canny"])
def test_saved_template_nodes_convert_and_validate(registry, node_type):
    """Each such node of ComfyUI's templates, cut out with stand-in sources for its links,
    converts with its saved widget values and validates; the only errors allowed are a
    model file that is not installed here and an input the template left unconnected."""
    saved = saved_nodes(frozenset([node_type]))
    assert saved
    definition = registry.get(node_type)
    for file_name, node in saved:
        document, sources = isolate(node)
        for cls in sources:
            if cls.node_name not in registry:
                registry.register(cls)
        spec = ui_to_workflow(document, registry).nodes["1"]
        where = f"{file_name} node {node.get('id')}"
        assert set(spec.inputs) <= set(definition.inputs), (where, spec.inputs)
        result = prepare(document, registry, ["1"])
        errors = (result.node_errors.get("1") or {}).get("errors", [])
        unexpected = [e for e in errors if not (
            (e["type"] == "value_not_in_list" and e["extra_info"]["input_name"] == "control_net_name")
            or (e["type"] == "required_input_missing" and e["details"] not in spec.inputs))]
        assert not unexpected, (where, errors)
        named = node.get("widgets_values_named")
        for name, value in (named or {}).items() if isinstance(named, dict) else ():
            if name in definition.widget_names and name in spec.inputs and name != "control_net_name":
                assert spec.inputs[name] == value, (where, name)


def test_apply_nodes_chain_links_and_refuse_a_non_image_hint():
    from pathlib import Path

    from nodes.controlnet.handle import ControlNetHandle
    from nodes.controlnet_nodes import ControlNetApply, ControlNetApplyAdvanced

    net = ControlNetHandle(None, "sd1", torch.device("cpu"), torch.float32, Path("n.safetensors"))
    conditioning = [[torch.zeros(1, 77, 8), {"strength": 0.5}]]
    image = torch.rand(2, 16, 24, 3)
    (first,) = ControlNetApply().execute(conditioning, net, image, 0.7)
    (second,) = ControlNetApply().execute(first, net, image, 0.3)
    link = second[0][1]["control"]
    assert [item.strength for item in link.chain()] == [0.3, 0.7] and link.previous is first[0][1]["control"]
    assert link.hint.shape == (2, 3, 16, 24) and second[0][1]["strength"] == 0.5  # other options kept
    assert second[0][1]["control_apply_to_uncond"] and "control" not in conditioning[0][1]  # input unchanged
    assert ControlNetApply().execute(conditioning, net, image, 0.0)[0] is conditioning
    positive, negative = ControlNetApplyAdvanced().execute(conditioning, conditioning, net, image, 1.0, 0.2, 0.8)
    assert positive[0][1]["control"] is negative[0][1]["control"]
    assert (positive[0][1]["control"].start_percent, positive[0][1]["control"].end_percent) == (0.2, 0.8)
    for bad in (torch.rand(16, 24, 3), torch.rand(1, 16, 24, 7), "image"):
        with pytest.raises(ValueError, match="IMAGE"):
            ControlNetApplyAdvanced().execute(conditioning, conditioning, net, bad, 1.0, 0.0, 1.0)
