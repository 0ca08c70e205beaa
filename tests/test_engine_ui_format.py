"""UI-format (editor) workflows convert to the API format the engine runs."""

from graph import Input, Node, NodeRegistry, Output, build_registry, prepare, ui_to_api
from nodes.sd.runtime import Runtime


def ui_node(node_id, node_type, widgets=(), inputs=(), outputs=(), mode=0, title=None):
    node = {"id": node_id, "type": node_type, "pos": [0, 0], "size": [200, 100], "flags": {}, "order": 0,
            "mode": mode, "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": n, "type": t, "links": links} for n, t, links in outputs],
            "properties": {}, "widgets_values": list(widgets)}
    if title:
        node["title"] = title
    return node


def document(nodes, links):
    return {"last_node_id": 99, "last_link_id": 99, "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {}, "version": 0.4}


def test_widgets_values_are_positional_and_skip_control_after_generate(registry):
    doc = document(
        [ui_node(1, "SeededValue", [42, "randomize", 7, "slow"], outputs=[("INT", "INT", [1])], title="Seed"),
         ui_node(2, "ShowValue", inputs=[("value", "*", 1)])],
        [[1, 1, 0, 2, 0, "INT"]],
    )
    api = ui_to_api(doc, registry)
    assert api == {"1": {"class_type": "SeededValue", "inputs": {"seed": 42, "steps": 7, "mode": "slow"},
                         "_meta": {"title": "Seed"}},
                   "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}


def test_control_entry_may_be_absent(registry):
    doc = document([ui_node(1, "SeededValue", [42, 7, "slow"]), ui_node(2, "ShowValue", inputs=[("value", "*", 1)])],
                   [[1, 1, 0, 2, 0, "INT"]])
    assert ui_to_api(doc, registry)["1"]["inputs"] == {"seed": 42, "steps": 7, "mode": "slow"}


def test_widget_converted_to_input_takes_the_link(registry):
    doc = document(
        [ui_node(1, "NumberSource", [5], outputs=[("INT", "INT", [1])]),
         ui_node(2, "SeededValue", [42, "fixed", 7, "fast"],
                 inputs=[("seed", "INT", 1)], outputs=[("INT", "INT", [2])]),
         ui_node(3, "ShowValue", inputs=[("value", "*", 2)])],
        [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]],
    )
    doc["nodes"][1]["inputs"][0]["widget"] = {"name": "seed"}
    api = ui_to_api(doc, registry)
    assert api["2"]["inputs"] == {"seed": ["1", 0], "steps": 7, "mode": "fast"}


def test_muted_nodes_are_dropped_and_bypassed_nodes_pass_through(registry):
    doc = document(
        [ui_node(1, "NumberSource", [5], outputs=[("INT", "INT", [1])]),
         ui_node(2, "AddInts", [0, 100], inputs=[("a", "INT", 1)], outputs=[("INT", "INT", [2])], mode=4),
         ui_node(3, "ShowValue", inputs=[("value", "*", 2)]),
         ui_node(4, "NumberSource", [9], outputs=[("INT", "INT", [3])], mode=2),
         ui_node(5, "ShowValue", inputs=[("value", "*", 3)], mode=2)],
        [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"], [3, 4, 0, 5, 0, "INT"]],
    )
    api = ui_to_api(doc, registry)
    assert set(api) == {"1", "3"}
    assert api["3"]["inputs"] == {"value": ["1", 0]}


def test_reroutes_primitives_and_notes_are_frontend_only(registry):
    doc = document(
        [ui_node(1, "NumberSource", [5], outputs=[("INT", "INT", [1])]),
         ui_node(2, "Reroute", inputs=[("", "*", 1)], outputs=[("", "INT", [2])]),
         ui_node(3, "PrimitiveNode", [11, "fixed"], outputs=[("INT", "INT", [3])]),
         ui_node(4, "AddInts", [0, 3], inputs=[("a", "INT", 2), ("b", "INT", 3)], outputs=[("INT", "INT", [4])]),
         ui_node(5, "ShowValue", inputs=[("value", "*", 4)]),
         ui_node(6, "Note", ["remember to check the seed"])],
        [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 4, 0, "INT"], [3, 3, 0, 4, 1, "INT"], [4, 4, 0, 5, 0, "INT"]],
    )
    doc["nodes"][3]["inputs"][1]["widget"] = {"name": "b"}
    api = ui_to_api(doc, registry)
    assert set(api) == {"1", "4", "5"}
    assert api["4"]["inputs"] == {"a": ["1", 0], "b": 11}  # the primitive's value, not the stale widget's


def test_ui_format_runs_through_prepare(registry, runner):
    doc = document(
        [ui_node(1, "NumberSource", [5], outputs=[("INT", "INT", [1])]),
         ui_node(2, "AddInts", [0, 3], inputs=[("a", "INT", 1)], outputs=[("INT", "INT", [2])]),
         ui_node(3, "ShowValue", inputs=[("value", "*", 2)])],
        [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]],
    )
    assert runner.run(doc).outputs == {"3": {"value": [8]}}


def test_unknown_ui_node_type_is_a_validation_error(registry):
    doc = document([ui_node(1, "Mystery", [1]), ui_node(2, "ShowValue", inputs=[("value", "*", 1)])],
                   [[1, 1, 0, 2, 0, "INT"]])
    checked = prepare(doc, registry)
    assert checked.node_errors["1"]["errors"][0]["type"] == "missing_node_type"


def test_dict_links_and_dict_widgets_of_newer_frontends(registry):
    doc = document([ui_node(1, "NumberSource"), ui_node(2, "ShowValue", inputs=[("value", "*", 7)])],
                   [{"id": 7, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "INT"}])
    doc["nodes"][0]["widgets_values"] = {"value": 12}
    assert ui_to_api(doc, registry) == {"1": {"class_type": "NumberSource", "inputs": {"value": 12}},
                                        "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}


def subgraph(subgraph_id, nodes, links, inputs=(), outputs=()):
    """A ``definitions.subgraphs`` entry as litegraph saves it: dict links, its own input side
    as node -10 and output side as node -20."""
    return {"id": subgraph_id, "name": subgraph_id, "nodes": nodes, "widgets": [],
            "inputNode": {"id": -10, "bounding": [0, 0, 75, 100]}, "outputNode": {"id": -20, "bounding": [0, 0, 75, 100]},
            "inputs": [{"id": f"in{i}", "name": n, "type": t, "linkIds": []} for i, (n, t) in enumerate(inputs)],
            "outputs": [{"id": f"out{i}", "name": n, "type": t, "linkIds": []} for i, (n, t) in enumerate(outputs)],
            "links": [{"id": i, "origin_id": o, "origin_slot": os, "target_id": t, "target_slot": ts, "type": ty}
                      for i, o, os, t, ts, ty in links]}


def test_subgraph_instances_are_flattened_with_path_ids(registry, runner):
    """Outer NumberSource(5) -> instance 7 of "add" (a + 3, with an instance of "inc" inside:
    +1) -> ShowValue. Inner ids become "7:1", "7:2:1"; links cross both boundaries."""
    inc = subgraph("inc", [ui_node(1, "AddInts", [0, 1], inputs=[("a", "INT", 1)], outputs=[("INT", "INT", [2])])],
                   [(1, -10, 0, 1, 0, "INT"), (2, 1, 0, -20, 0, "INT")], inputs=[("x", "INT")], outputs=[("y", "INT")])
    add = subgraph("add", [ui_node(1, "AddInts", [0, 3], inputs=[("a", "INT", 1)], outputs=[("INT", "INT", [2])]),
                           ui_node(2, "inc", inputs=[("x", "INT", 2)], outputs=[("y", "INT", [3])]),
                           ui_node(3, "Note", ["inside"])],
                   [(1, -10, 0, 1, 0, "INT"), (2, 1, 0, 2, 0, "INT"), (3, 2, 0, -20, 0, "INT")],
                   inputs=[("x", "INT")], outputs=[("y", "INT")])
    doc = document(
        [ui_node(1, "NumberSource", [5], outputs=[("INT", "INT", [1])]),
         ui_node(7, "add", inputs=[("x", "INT", 1)], outputs=[("y", "INT", [2])]),
         ui_node(3, "ShowValue", inputs=[("value", "*", 2)])],
        [[1, 1, 0, 7, 0, "INT"], [2, 7, 0, 3, 0, "INT"]],
    )
    doc["definitions"] = {"subgraphs": [add, inc]}
    api = ui_to_api(doc, registry)
    assert {key: node["inputs"] for key, node in api.items()} == {
        "1": {"value": 5},
        "7:1": {"a": ["1", 0], "b": 3},
        "7:2:1": {"a": ["7:1", 0], "b": 1},
        "3": {"value": ["7:2:1", 0]},
    }
    assert runner.run(doc).outputs == {"3": {"value": [9]}}


def test_a_muted_instance_and_a_subgraph_inside_itself(registry):
    loop = subgraph("loop", [ui_node(1, "loop", outputs=[("y", "INT", [1])])], [(1, 1, 0, -20, 0, "INT")],
                    outputs=[("y", "INT")])
    doc = document([ui_node(1, "loop", outputs=[("y", "INT", [5])]),
                    ui_node(2, "loop", outputs=[("y", "INT", [6])], mode=2),
                    ui_node(3, "ShowValue", inputs=[("value", "*", 5)]),
                    ui_node(4, "ShowValue", inputs=[("value", "*", 6)], mode=2)],
                   [[5, 1, 0, 3, 0, "INT"], [6, 2, 0, 4, 0, "INT"]])
    doc["definitions"] = {"subgraphs": [loop]}
    checked = prepare(doc, registry)
    assert set(checked.node_errors) == {"1:1"}  # the muted instance and its consumer are dropped whole
    assert "nested in itself" in checked.node_errors["1:1"]["errors"][0]["message"]


# ComfyUI frontend load-time behaviour (the oracle captures in tests/data/frontend_oracle
# check the same on whole workflows; these pin each rule on its own).


def test_control_after_generate_saved_as_a_boolean_is_skipped(registry):
    """ComfyUI's classic default workflow saves KSampler's control entry as true."""
    for control in (True, False):
        doc = document([ui_node(1, "SeededValue", [42, control, 7, "slow"]),
                        ui_node(2, "ShowValue", inputs=[("value", "*", 1)])], [[1, 1, 0, 2, 0, "INT"]])
        assert ui_to_api(doc, registry)["1"]["inputs"] == {"seed": 42, "steps": 7, "mode": "slow"}


def test_widgets_without_saved_values_take_their_defaults(registry):
    doc = document([ui_node(1, "SeededValue"), ui_node(2, "SeededValue", [5]),
                    ui_node(3, "ShowValue", inputs=[("value", "*", 1)]),
                    ui_node(4, "ShowValue", inputs=[("value", "*", 2)])],
                   [[1, 1, 0, 3, 0, "INT"], [2, 2, 0, 4, 0, "INT"]])
    del doc["nodes"][0]["widgets_values"]
    api = ui_to_api(doc, registry)
    assert api["1"]["inputs"] == {"seed": 0, "steps": 20, "mode": "fast"}
    assert api["2"]["inputs"] == {"seed": 5, "steps": 20, "mode": "fast"}  # an older, shorter layout


def test_a_saved_null_combo_takes_the_first_choice(registry):
    doc = document([ui_node(1, "PickMode", [None]), ui_node(2, "ShowValue", inputs=[("value", "*", 1)])],
                   [[1, 1, 0, 2, 0, "STRING"]])
    assert ui_to_api(doc, registry)["1"]["inputs"] == {"mode": "fast"}


class _ForceInputNode(Node):
    """A node with a forceInput INT between two widgets."""

    node_name = "TestForceInput"
    first = Input("INT", default=1)
    linked = Input("INT", default=0, force_input=True)
    last = Input("STRING", default="x")
    outputs = (Output("INT"),)

    def execute(self, first: int, linked: int, last: str) -> tuple:
        return (first + linked,)


def test_force_input_placeholders_of_files_saved_before_frontend_1_16_are_dropped():
    registry = NodeRegistry()
    registry.register(_ForceInputNode, builtin=True)
    older = document([ui_node(1, "TestForceInput", [3, 0, "y"])], [])
    current = document([ui_node(1, "TestForceInput", [3, "y"])], [])
    assert ui_to_api(older, registry)["1"]["inputs"] == {"first": 3, "last": "y"}
    assert ui_to_api(current, registry)["1"]["inputs"] == {"first": 3, "last": "y"}


def test_ksampler_sampler_names_of_old_files_lose_their_sample_prefix():
    registry = build_registry("nodes", None)
    doc = document([ui_node(3, "KSampler", [1, "fixed", 20, 8, "sample_euler", "normal", 1])], [])
    assert ui_to_api(doc, registry)["3"]["inputs"]["sampler_name"] == "euler"


def _add_subgraph():
    """"add": inner AddInts 1 (a from subgraph input 0, b from subgraph input 1, a widget) ->
    output 0."""
    inner = ui_node(1, "AddInts", [0, 3], inputs=[("a", "INT", 1), ("b", "INT", 2)], outputs=[("INT", "INT", [3])])
    inner["inputs"][1]["widget"] = {"name": "b"}
    return subgraph("add", [inner], [(1, -10, 0, 1, 0, "INT"), (2, -10, 1, 1, 1, "INT"), (3, 1, 0, -20, 0, "INT")],
                    inputs=[("x", "INT"), ("b", "INT")], outputs=[("y", "INT")])


def test_values_on_a_subgraph_instance_override_the_inner_widgets(registry, runner):
    """Two instances of one subgraph, each with its own value for the exposed widget "b"
    (saved as the current frontend saves it: the instance input marked ``widget``, its value
    in widgets_values and widgets_values_named); a third leaves it unset."""
    nodes = [ui_node(1, "NumberSource", [5], outputs=[("INT", "INT", [1, 2, 3])])]
    links = []
    for instance, value, link in ((7, 10, 1), (8, 20, 2), (9, None, 3)):
        node = ui_node(instance, "add", [value] if value is not None else [], inputs=[("x", "INT", link), ("b", "INT", None)],
                       outputs=[("y", "INT", [link + 10])])
        node["inputs"][1]["widget"] = {"name": "b"}
        if value is None:
            del node["widgets_values"]
        elif instance == 8:  # saved only by name
            node["widgets_values_named"] = {"b": value}
            del node["widgets_values"]
        nodes += [node, ui_node(instance + 10, "ShowValue", inputs=[("value", "*", link + 10)])]
        links += [[link, 1, 0, instance, 0, "INT"], [link + 10, instance, 0, instance + 10, 0, "INT"]]
    doc = document(nodes, links)
    doc["definitions"] = {"subgraphs": [_add_subgraph()]}
    api = ui_to_api(doc, registry)
    assert api["7:1"]["inputs"] == {"a": ["1", 0], "b": 10}
    assert api["8:1"]["inputs"] == {"a": ["1", 0], "b": 20}
    assert api["9:1"]["inputs"] == {"a": ["1", 0], "b": 3}  # the inner widget's own value
    assert runner.run(doc).outputs == {"17": {"value": [15]}, "18": {"value": [25]}, "19": {"value": [8]}}


def test_an_instance_widget_value_is_read_by_position_first(registry):
    """The frontend restores ``widgets_values`` by position; ``widgets_values_named`` only
    behind a setting that is off by default (a capture where the two disagree showed it)."""
    node = ui_node(7, "add", [10], inputs=[("x", "INT", None), ("b", "INT", None)], outputs=[("y", "INT", [3])])
    node["inputs"][1]["widget"] = {"name": "b"}
    node["widgets_values_named"] = {"b": 999}
    doc = document([node, ui_node(3, "ShowValue", inputs=[("value", "*", 3)])], [[3, 7, 0, 3, 0, "INT"]])
    doc["definitions"] = {"subgraphs": [_add_subgraph()]}
    assert ui_to_api(doc, registry)["7:1"]["inputs"]["b"] == 10


def test_a_linked_instance_input_wins_over_its_widget_value(registry):
    doc = document([ui_node(1, "NumberSource", [5], outputs=[("INT", "INT", [1, 2])]),
                    ui_node(7, "add", [10], inputs=[("x", "INT", 1), ("b", "INT", 2)], outputs=[("y", "INT", [3])]),
                    ui_node(3, "ShowValue", inputs=[("value", "*", 3)])],
                   [[1, 1, 0, 7, 0, "INT"], [2, 1, 0, 7, 1, "INT"], [3, 7, 0, 3, 0, "INT"]])
    doc["nodes"][1]["inputs"][1]["widget"] = {"name": "b"}
    doc["definitions"] = {"subgraphs": [_add_subgraph()]}
    assert ui_to_api(doc, registry)["7:1"]["inputs"] == {"a": ["1", 0], "b": ["1", 0]}


def test_proxy_widget_values_of_older_frontends_override_the_inner_widgets(registry):
    """Frontends before widget inputs on instances saved promoted widgets as
    ``properties.proxyWidgets`` ([inner node id, widget name]) with the values in order."""
    inner = ui_node(1, "AddInts", [0, 3], inputs=[("a", "INT", 1)], outputs=[("INT", "INT", [3])])
    add = subgraph("add", [inner], [(1, -10, 0, 1, 0, "INT"), (3, 1, 0, -20, 0, "INT")],
                   inputs=[("x", "INT")], outputs=[("y", "INT")])
    instance = ui_node(7, "add", [40], inputs=[("x", "INT", 1)], outputs=[("y", "INT", [2])])
    instance["properties"] = {"proxyWidgets": [["1", "b"]]}
    doc = document([ui_node(1, "NumberSource", [5], outputs=[("INT", "INT", [1])]), instance,
                    ui_node(3, "ShowValue", inputs=[("value", "*", 2)])],
                   [[1, 1, 0, 7, 0, "INT"], [2, 7, 0, 3, 0, "INT"]])
    doc["definitions"] = {"subgraphs": [add]}
    assert ui_to_api(doc, registry)["7:1"]["inputs"] == {"a": ["1", 0], "b": 40}


def test_an_empty_file_combo_takes_the_first_listed_file_when_folders_are_known(tmp_path):
    """The frontend fills an empty combo from the server's list; without the application's
    folders the converter leaves it empty for validation to report."""
    from nodes.models.folders import ModelFolders

    registry = build_registry("nodes", None)
    (tmp_path / "checkpoints").mkdir()
    for name in ("b.safetensors", "a.safetensors"):
        (tmp_path / "checkpoints" / name).write_bytes(b"")
    doc = document([ui_node(4, "CheckpointLoaderSimple", [None])], [])
    assert ui_to_api(doc, registry, Runtime(models=ModelFolders(tmp_path)))["4"]["inputs"] == {"ckpt_name": "a.safetensors"}
    assert ui_to_api(doc, registry)["4"]["inputs"] == {"ckpt_name": None}


def test_a_subgraph_link_from_a_negative_input_slot_does_not_raise(registry):
    """Found by the subgraph fuzz test: a boundary link whose origin slot is -1 indexed the
    instance's inputs from the end (IndexError on an instance without inputs)."""
    document = {"nodes": [{"id": 5, "type": "sg-a", "inputs": []},
                          {"id": 6, "type": "ShowValue", "inputs": [{"name": "value", "link": 9}]}],
                "links": [[9, 5, 0, 6, 0, "INT"]],
                "definitions": {"subgraphs": [{"id": "sg-a", "nodes": [], "links": [
                    {"id": 1, "origin_id": -10, "origin_slot": -1, "target_id": -20, "target_slot": 0,
                     "type": "INT"}]}]}}
    assert ui_to_api(document, registry) == {"6": {"class_type": "ShowValue", "inputs": {}}}
