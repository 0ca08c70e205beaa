"""The split-file loaders as ComfyUI saves them: every UNETLoader, CLIPLoader and
DualCLIPLoader in ComfyUI's templates (PyPI ``comfyui-workflow-templates-json``) converts
and validates unchanged, and the declarations carry ComfyUI's inputs, order and choices.

The templates load models of many families (Flux, Qwen, Wan...), so the choice lists must
be ComfyUI's whole lists; only running such a node fails. Model names are checked against
a models folder holding (empty) files of the names the templates use. Where the package's
tooling recorded ``widgets_values_named``, the converted inputs must equal it: an oracle
independent of our declarations.
"""

from __future__ import annotations

import pytest

from graph import prepare
from graph.ui_format import ui_to_workflow
from nodes.models.folders import ModelFolders
from nodes.sd.runtime import Runtime
from tests.utility_support import isolate, make_registry, saved_nodes, templates_folder

NODE_TYPES = ("UNETLoader", "CLIPLoader", "DualCLIPLoader")
FILE_INPUTS = ("unet_name", "clip_name", "clip_name1", "clip_name2")

# As ComfyUI 0.8.0's nodes.py declares them (INPUT_TYPES: required, then optional).
COMFY_INPUTS = {
    "UNETLoader": ["unet_name", "weight_dtype"],
    "CLIPLoader": ["clip_name", "type", "device"],
    "DualCLIPLoader": ["clip_name1", "clip_name2", "type", "device"],
}
COMFY_CHOICES = {
    ("UNETLoader", "weight_dtype"): ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],
    ("CLIPLoader", "type"): ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart",
                             "cosmos", "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image",
                             "hunyuan_image", "flux2", "ovis"],
    ("CLIPLoader", "device"): ["default", "cpu"],
    ("DualCLIPLoader", "type"): ["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image",
                                 "hunyuan_video_15", "kandinsky5", "kandinsky5_image", "ltxv", "newbie"],
    ("DualCLIPLoader", "device"): ["default", "cpu"],
}

pytestmark = pytest.mark.skipif(templates_folder() is None, reason="comfyui-workflow-templates-json is not installed")


@pytest.fixture(scope="module")
def registry():
    return make_registry()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """A models folder with an empty file for every model name the templates' loaders use,
    split between each kind's two folders as a ComfyUI install may have them."""
    root = tmp_path_factory.mktemp("template_models") / "models"
    for folder in ("diffusion_models", "unet", "text_encoders", "clip"):
        (root / folder).mkdir(parents=True)
    for index, (_, node) in enumerate(saved_nodes(frozenset(NODE_TYPES))):
        values = node.get("widgets_values") or []
        names = values[:2] if node["type"] == "DualCLIPLoader" else values[:1]
        pair = ("diffusion_models", "unet") if node["type"] == "UNETLoader" else ("text_encoders", "clip")
        for name in names:
            if isinstance(name, str) and name:
                (root / pair[index % 2] / name).touch()
    return Runtime(models=ModelFolders(root))


def test_declarations_follow_comfyui(registry):
    for node_type, names in COMFY_INPUTS.items():
        definition = registry.get(node_type)
        assert list(definition.inputs) == names
        assert [o.type for o in definition.outputs] == (["MODEL"] if node_type == "UNETLoader" else ["CLIP"])
        assert [n for n, i in definition.inputs.items() if i.optional] == (["device"] if "device" in names else [])
        if "device" in names:  # ComfyUI declares it {"advanced": True}
            assert definition.inputs["device"].spec() == [["default", "cpu"], {"advanced": True}]
    for (node_type, name), choices in COMFY_CHOICES.items():
        ours = registry.get(node_type).inputs[name].choice_list()
        # ComfyUI's list, in its order; later ComfyUI versions appended names (seen in the templates).
        assert ours[: len(choices)] == choices


def test_the_loaders_list_both_folders_of_a_kind(registry, runtime):
    names = registry.get("UNETLoader").inputs["unet_name"].choice_list(runtime)
    folders = runtime.models
    assert set(names) == set(folders.list("unet")) | set(folders.list("diffusion_models"))
    assert folders.list("unet") and folders.list("diffusion_models")


@pytest.mark.parametrize("node_type", NODE_TYPES)
def test_saved_nodes_convert_and_validate(registry, runtime, node_type):
    saved = saved_nodes(frozenset([node_type]))
    assert saved
    definition = registry.get(node_type)
    checked_named = 0
    for file_name, node in saved:
        document, sources = isolate(node)
        for cls in sources:
            if cls.node_name not in registry:
                registry.register(cls)
        where = f"{file_name} node {node.get('id')}"
        spec = ui_to_workflow(document, registry).nodes["1"]
        assert set(spec.inputs) <= set(definition.inputs), (where, spec.inputs)
        result = prepare(document, registry, ["1"], runtime=runtime)
        assert result.ok, (where, result.response())
        named = node.get("widgets_values_named")
        if isinstance(named, dict):
            linked = {entry.get("name") for entry in node.get("inputs") or [] if entry.get("link") is not None}
            for name, value in named.items():
                if name in definition.widget_names and name not in linked:
                    if name in FILE_INPUTS and spec.inputs.get(name) != value:
                        # Three saved nodes' named record names another file than their
                        # widgets_values; their own download list (properties.models) sides
                        # with widgets_values, which is what ComfyUI's frontend sends.
                        listed = {m.get("name") for m in (node.get("properties") or {}).get("models") or []}
                        assert spec.inputs.get(name) in listed, (where, name, spec.inputs)
                        continue
                    assert spec.inputs.get(name) == value, (where, name, spec.inputs)
                    checked_named += 1
    assert checked_named, "no named widget value was compared"


def test_the_templates_use_sd_family_choices(runtime):
    """Templates load SD-family text encoders with CLIPLoader's stable_diffusion type (and
    the choices our loaders accept for running)."""
    types = {(node["type"], (node.get("widgets_values") or [None, None])[1])
             for _, node in saved_nodes(frozenset(NODE_TYPES)) if node["type"] != "UNETLoader"}
    assert ("CLIPLoader", "stable_diffusion") in types
