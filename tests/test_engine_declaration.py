"""Node declarations generate validation rules and ComfyUI's /object_info document."""

from graph import Input, Node, NodeRegistry, Output
from graph.node import definition_of
from tests.engine_nodes import JoinText, PickMode, SeededValue, ShowValue, Switch


def test_object_info_shape_follows_comfyui(registry):
    info = registry.object_info()["SeededValue"]
    assert info["input"]["required"]["seed"] == [
        "INT", {"default": 0, "min": 0, "max": 2**64 - 1, "control_after_generate": True}]
    assert info["input"]["required"]["mode"] == [["fast", "slow"], {"default": "fast"}]
    assert info["input_order"] == {"required": ["seed", "steps", "mode"]}
    assert info["output"] == ["INT"] and info["output_is_list"] == [False] and info["output_name"] == ["INT"]
    assert info["name"] == "SeededValue" and info["display_name"] == "Seeded Value"
    assert info["category"] == "test" and info["output_node"] is False
    assert info["description"].startswith("A seed-like INT")
    assert info["python_module"] == "tests.engine_nodes"


def test_optional_multiline_lazy_and_list_flags_are_declared(registry):
    join = registry.object_info()["JoinText"]
    assert join["input"]["required"]["text"] == ["STRING", {"default": "", "multiline": True}]
    assert join["input"]["optional"]["suffix"] == ["STRING", {"default": ""}]
    assert join["input_order"] == {"required": ["text"], "optional": ["suffix"]}
    switch = registry.object_info()["Switch"]
    assert switch["input"]["required"]["on_true"] == ["*", {"lazy": True}]
    assert registry.object_info()["IntRange"]["output_is_list"] == [True]
    assert registry.object_info()["ShowValue"]["output_node"] is True


def test_widget_names_are_the_typed_constant_inputs_in_order():
    assert definition_of(SeededValue).widget_names == ("seed", "steps", "mode")
    assert definition_of(JoinText).widget_names == ("text", "suffix")
    assert definition_of(ShowValue).widget_names == ()
    assert definition_of(Switch).widget_names == ("select",)
    assert definition_of(PickMode).inputs["mode"].type == "COMBO"


def test_combo_choices_may_be_computed_when_asked():
    files = ["a.safetensors"]

    class LoadThing(Node):
        name = Input(choices=lambda runtime: list(files) + (runtime or {}).get("extra", []))
        outputs = (Output("THING"),)

    registry = NodeRegistry()
    registry.register(LoadThing)
    assert registry.object_info()["LoadThing"]["input"]["required"]["name"][0] == ["a.safetensors"]
    files.append("b.safetensors")
    assert registry.object_info()["LoadThing"]["input"]["required"]["name"][0] == ["a.safetensors", "b.safetensors"]
    assert definition_of(LoadThing).inputs["name"].check_constant("b.safetensors") is None
    assert definition_of(LoadThing).inputs["name"].check_constant("c.safetensors")[0] == "value_not_in_list"
    runtime = {"extra": ["c.safetensors"]}
    assert definition_of(LoadThing).inputs["name"].check_constant("c.safetensors", runtime) is None
    assert registry.object_info(runtime)["LoadThing"]["input"]["required"]["name"][0][-1] == "c.safetensors"


def test_constant_checks_come_from_the_declaration():
    seed = definition_of(SeededValue).inputs["seed"]
    assert seed.check_constant(5) is None
    assert seed.check_constant(5.0) is None
    assert seed.check_constant(5.5)[0] == "invalid_input_type"
    assert seed.check_constant(True)[0] == "invalid_input_type"
    assert seed.check_constant("5")[0] == "invalid_input_type"
    assert seed.check_constant(-1)[0] == "value_smaller_than_min"
    assert seed.check_constant(2**64)[0] == "value_bigger_than_max"
    mode = definition_of(SeededValue).inputs["mode"]
    assert mode.check_constant("slow") is None
    assert mode.check_constant("medium")[0] == "value_not_in_list"
    assert mode.check_constant(["fast"])[0] == "value_not_in_list"
