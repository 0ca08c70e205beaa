"""DynamicCombo inputs (ComfyUI's ``COMFY_DYNAMICCOMBO_V3``) described, converted and
validated as ComfyUI does.

``/object_info`` nests each choice's inputs inside the combo (comfy_api's
``DynamicCombo.Input.as_dict``: ``{"options": [{"key", "inputs": {"required": ...}}]}``,
no default, short input names) and leaves them out of the node's own sections; the
official frontend builds its widgets from that. tests/data/frontend_oracle/dynamic_combos.json
is a workflow edited and saved in frontend 1.58.1 (tools/capture_frontend_prompts.py
``build:dynamic_combos``) with the prompt it sent; test_frontend_oracle.py compares our
conversion with it, and this file checks what the record holds and the rules behind it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graph import build_registry, prepare
from graph.node import DYNAMIC_COMBO
from graph.ui_format import ui_to_api, ui_to_workflow

REPO = Path(__file__).resolve().parent.parent
RECORD = REPO / "tests" / "data" / "frontend_oracle" / "dynamic_combos.json"


@pytest.fixture(scope="module")
def registry():
    return build_registry("nodes", None)


def test_object_info_nests_each_choice_inputs_as_comfyui(registry):
    info = registry.object_info()["ResizeImageMaskNode"]
    assert info["input_order"] == {"required": ["input", "resize_type", "scale_method"]}
    assert set(info["input"]) == {"required"}  # the revealed inputs are not the node's own
    kind, options = info["input"]["required"]["resize_type"]
    assert kind == DYNAMIC_COMBO == "COMFY_DYNAMICCOMBO_V3" and "default" not in options
    choices = {option["key"]: option["inputs"] for option in options["options"]}
    assert list(choices)[0] == "scale dimensions"  # the frontend's default is the first
    assert list(choices["scale dimensions"]["required"]) == ["width", "height", "crop"]
    assert choices["match size"]["required"]["match"] == ["IMAGE,MASK", {}]
    assert choices["scale by multiplier"]["required"]["multiplier"][1]["max"] == 8.0

    fmt = registry.object_info()["SaveImageAdvanced"]["input"]["required"]["format"]
    per_format = {option["key"]: option["inputs"]["required"] for option in fmt[1]["options"]}
    # Each format's own choices, as ComfyUI declares them, not their union.
    assert per_format["png"]["bit_depth"][0] == ["8-bit", "16-bit"]
    assert per_format["exr"]["bit_depth"] == [["32-bit float"], {"default": "32-bit float", "advanced": True}]
    nested = per_format["avif"]["save_mode"]
    assert nested[0] == DYNAMIC_COMBO
    assert {o["key"]: list(o["inputs"]["required"]) for o in nested[1]["options"]} == {
        "still images": [], "animated": ["fps", "loop_count"]}


def test_the_frontend_saved_only_the_chosen_options_widgets():
    record = json.loads(RECORD.read_text(encoding="utf-8"))
    saved = {node["id"]: node for node in json.loads((REPO / record["workflow"]).read_text())["nodes"]}
    # ComfyUI's layout: the combo's value, then the widgets its choice shows, then the rest.
    assert saved[4]["widgets_values"] == ["scale by multiplier", 2.5, "bicubic"]
    assert saved[3]["widgets_values"] == ["match size", "disabled", "area"]
    assert [i["name"] for i in saved[3]["inputs"]] == ["input", "resize_type.match"]
    assert saved[6]["widgets_values"] == ["anim", "avif", "auto", "sRGB", 30, "animated", 12, 0]
    # Switching png -> exr gave bit_depth the exr option's own default.
    assert record["prompt"]["5"]["inputs"]["format.bit_depth"] == "32-bit float"


def test_the_frontend_saved_workflow_converts_and_validates(registry, tmp_path):
    record = json.loads(RECORD.read_text(encoding="utf-8"))
    workflow = json.loads((REPO / record["workflow"]).read_text())
    api = ui_to_api(workflow, registry)
    assert api["4"]["inputs"] == record["prompt"]["4"]["inputs"]
    checked = prepare(workflow, registry, ["5", "6", "7"])
    assert checked.ok, checked.response()


def test_missing_values_take_the_chosen_options_defaults(registry):
    # A node saved without the revealed values (older file, or written by hand) gets the
    # chosen option's defaults: exr's bit depth is "32-bit float", not png's "8-bit".
    node = {"id": 1, "type": "SaveImageAdvanced", "mode": 0, "inputs": [], "widgets_values": ["x", "exr"]}
    spec = ui_to_workflow({"nodes": [node], "links": []}, registry).nodes["1"]
    assert spec.inputs == {"filename_prefix": "x", "format": "exr", "format.bit_depth": "32-bit float",
                           "format.input_color_space": "sRGB"}
    node["widgets_values"] = ["x", "avif"]
    spec = ui_to_workflow({"nodes": [node], "links": []}, registry).nodes["1"]
    assert spec.inputs["format.save_mode"] == "still images" and "format.save_mode.fps" not in spec.inputs
    assert spec.inputs["format.bit_depth"] == "auto" and spec.inputs["format.crf"] == 18


def test_a_dynamic_combo_default_must_be_its_first_choice():
    from graph import Input

    assert Input(dynamic={"a": (), "b": ()}).default == "a"
    with pytest.raises(ValueError, match="first choice"):
        Input(dynamic={"a": (), "b": ()}, default="b")
