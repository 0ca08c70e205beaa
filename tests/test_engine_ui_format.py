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
