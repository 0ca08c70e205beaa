"""UI-format (editor) workflows convert to the API format the engine runs."""

from graph import prepare, ui_to_api


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
