"""Validation reports every problem at once, per node, in ComfyUI's error shape."""

from graph import prepare


def errors_of(checked, node_id):
    return [(e["type"], e["extra_info"].get("input_name")) for e in checked.node_errors[node_id]["errors"]]


def test_valid_workflow_gets_a_plan(registry):
    checked = prepare({"1": {"class_type": "NumberSource", "inputs": {"value": 1}},
                       "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}, registry)
    assert checked.ok and checked.plan.order == ["1", "2"] and checked.outputs == ["2"]


def test_all_errors_are_reported_in_one_pass(registry):
    document = {
        "1": {"class_type": "NumberSource", "inputs": {"value": 5000}},                 # above max
        "2": {"class_type": "AddInts", "inputs": {"a": ["1", 0]}},                       # b missing
        "3": {"class_type": "AddInts", "inputs": {"a": ["99", 0], "b": ["1", 3]}},       # missing node, bad index
        "4": {"class_type": "ScaleFloat", "inputs": {"x": -11.0, "factor": "two"}},      # below min, wrong type
        "5": {"class_type": "SeededValue", "inputs": {"seed": ["7", 0], "steps": 3, "mode": "medium"}},
        "6": {"class_type": "NoSuchNode", "inputs": {}},
        "7": {"class_type": "PickMode", "inputs": {"mode": "fast"}},                     # STRING into INT seed
        "8": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}},
        "9": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}},
        "10": {"class_type": "ShowValue", "inputs": {"value": ["4", 0]}},
        "11": {"class_type": "ShowValue", "inputs": {"value": ["5", 0]}},
        "12": {"class_type": "ShowValue", "inputs": {"value": ["6", 0]}},
    }
    checked = prepare(document, registry)
    assert not checked.ok and checked.plan is None
    # The unknown class is named first (as ComfyUI); every other problem is still reported.
    assert checked.error["type"] == "missing_node_type" and "'NoSuchNode'" in checked.error["message"]
    assert errors_of(checked, "1") == [("value_bigger_than_max", "value")]
    assert errors_of(checked, "2") == [("required_input_missing", "b")]
    assert errors_of(checked, "3") == [("bad_linked_input", "a"), ("bad_linked_input", "b")]
    assert errors_of(checked, "4") == [("value_smaller_than_min", "x"), ("invalid_input_type", "factor")]
    assert errors_of(checked, "5") == [("return_type_mismatch", "seed"), ("value_not_in_list", "mode")]
    assert errors_of(checked, "6") == [("missing_node_type", None)]
    assert "NoSuchNode" in checked.node_errors["6"]["errors"][0]["message"]
    assert checked.node_errors["1"]["dependent_outputs"] == ["8", "9"]
    assert checked.node_errors["6"]["dependent_outputs"] == ["12"]
    assert checked.node_errors["4"]["class_type"] == "ScaleFloat"
    mismatch = checked.node_errors["5"]["errors"][0]
    assert "INT" in mismatch["message"] and "STRING" in mismatch["message"]
    assert set(checked.node_errors) == {"1", "2", "3", "4", "5", "6"}


def test_dependent_outputs_name_the_outputs_each_bad_node_feeds(registry):
    document = {
        "1": {"class_type": "NumberSource", "inputs": {"value": 5000}},
        "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
        "4": {"class_type": "NumberSource", "inputs": {"value": 1}},
        "5": {"class_type": "ShowValue", "inputs": {"value": ["4", 0]}},
    }
    checked = prepare(document, registry)
    assert checked.node_errors["1"]["dependent_outputs"] == ["2", "3"]
    assert set(checked.node_errors) == {"1"}


def test_a_cycle_names_every_node_in_it(registry):
    document = {
        "1": {"class_type": "AddInts", "inputs": {"a": ["3", 0], "b": 1}},
        "2": {"class_type": "AddInts", "inputs": {"a": ["1", 0], "b": 1}},
        "3": {"class_type": "AddInts", "inputs": {"a": ["2", 0], "b": 1}},
        "4": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}},
        "5": {"class_type": "AddInts", "inputs": {"a": ["5", 0], "b": 1}},
        "6": {"class_type": "ShowValue", "inputs": {"value": ["5", 0]}},
    }
    checked = prepare(document, registry)
    assert set(checked.node_errors) == {"1", "2", "3", "5"}
    for node_id in ("1", "2", "3"):
        (error,) = checked.node_errors[node_id]["errors"]
        assert error["type"] == "dependency_cycle"
        assert error["extra_info"]["cycle"] == ["1", "2", "3"]
        assert all(f"{n} (AddInts)" in error["message"] for n in ("1", "2", "3"))
    assert checked.node_errors["5"]["errors"][0]["extra_info"]["cycle"] == ["5"]


def test_no_output_node(registry):
    checked = prepare({"1": {"class_type": "NumberSource", "inputs": {"value": 1}}}, registry)
    assert checked.error["type"] == "prompt_no_outputs" and checked.node_errors == {}


def test_nodes_that_no_output_needs_are_not_validated(registry):
    document = {"1": {"class_type": "NumberSource", "inputs": {"value": 1}},
                "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
                "3": {"class_type": "AddInts", "inputs": {}}}
    assert prepare(document, registry).ok


def test_malformed_shapes_become_node_errors(registry):
    document = {
        "1": "not an object",
        "2": {"inputs": {}},
        "3": {"class_type": "AddInts", "inputs": {"a": [1, 2, 3], "b": ["1", "x"]}},
        "4": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}},
        "5": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
        "6": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}},
    }
    checked = prepare(document, registry)
    assert errors_of(checked, "1") == [("invalid_prompt", None)]
    assert errors_of(checked, "2") == [("invalid_prompt", None)]
    assert ("bad_linked_input", "a") in errors_of(checked, "3") and ("bad_linked_input", "b") in errors_of(checked, "3")
    assert prepare([1, 2], registry).error["type"] == "invalid_prompt"


def test_wrapped_list_constants_and_numeric_link_ids(registry):
    document = {"1": {"class_type": "NumberSource", "inputs": {"value": 2}},
                "2": {"class_type": "ShowValue", "inputs": {"value": [1, 0]}},
                "3": {"class_type": "ShowValue", "inputs": {"value": {"__value__": [1, 2, 3]}}}}
    checked = prepare(document, registry)
    assert checked.ok
    assert checked.plan.workflow.nodes["3"].inputs["value"] == [1, 2, 3]
    assert checked.plan.workflow.to_api()["3"]["inputs"]["value"] == {"__value__": [1, 2, 3]}


def test_partial_execution_targets_limit_what_runs(registry):
    document = {"1": {"class_type": "NumberSource", "inputs": {"value": 2}},
                "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
                "3": {"class_type": "NumberSource", "inputs": {"value": 9999}},
                "4": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}}}
    assert not prepare(document, registry).ok
    checked = prepare(document, registry, targets=["2"])
    assert checked.ok and checked.plan.order == ["1", "2"]
    assert prepare(document, registry, targets=["42"]).error["type"] == "invalid_prompt"


def test_plan_order_is_topological_and_deterministic(registry):
    document = {
        "10": {"class_type": "AddInts", "inputs": {"a": ["2", 0], "b": ["9", 0]}},
        "9": {"class_type": "NumberSource", "inputs": {"value": 1}},
        "2": {"class_type": "NumberSource", "inputs": {"value": 1}},
        "11": {"class_type": "ShowValue", "inputs": {"value": ["10", 0]}},
        "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}},
    }
    orders = {tuple(prepare(document, registry).plan.order) for _ in range(5)}
    assert len(orders) == 1
    (order,) = orders
    assert order.index("2") < order.index("10") and order.index("9") < order.index("10") < order.index("11")
    assert set(order) == {"2", "3", "9", "10", "11"}


def test_an_empty_class_type_is_an_error_not_a_crash():
    """Found by the subgraph fuzz test: a node whose class is "" passed validation and made
    planning assert."""
    from graph import build_registry, prepare

    registry = build_registry("tests.engine_nodes", None)
    document = {"1": {"class_type": "", "inputs": {}},
                "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    checked = prepare(document, registry)
    assert not checked.ok and checked.node_errors["1"]["errors"][0]["type"] == "invalid_prompt"
