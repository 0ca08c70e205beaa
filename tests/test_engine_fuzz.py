"""No JSON input may raise: random and mutated workflows give a plan or structured errors."""

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph import prepare
from tests.engine_nodes import TEST_NODES
from tests.test_engine_ui_format import document, ui_node

CLASS_NAMES = [cls.__name__ for cls in TEST_NODES] + ["Nope", "", "Reroute", "PrimitiveNode"]
json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8)
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=6), children, max_size=4), max_leaves=12)
node_ids = st.sampled_from(["1", "2", "3", "4", "5", "x"])
input_values = (json_values | st.tuples(node_ids, st.integers(-2, 3)).map(list)
                | st.tuples(st.integers(0, 6), st.integers(0, 2)).map(list))
input_names = st.sampled_from(["value", "a", "b", "x", "factor", "mode", "seed", "steps", "select",
                               "on_true", "on_false", "values", "count", "text", "path", "size"])
api_nodes = st.fixed_dictionaries({"class_type": st.sampled_from(CLASS_NAMES) | json_values,
                                   "inputs": st.dictionaries(input_names, input_values, max_size=4) | json_values})
api_documents = st.dictionaries(node_ids, api_nodes | json_values, max_size=6) | json_values
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def check_outcome(checked):
    if checked.ok:
        assert checked.plan is not None and set(checked.plan.outputs) <= set(checked.plan.order)
    else:
        assert checked.error is not None
        assert isinstance(checked.error["message"], str)
        for entry in checked.node_errors.values():
            assert entry["errors"] and all({"type", "message", "details", "extra_info"} <= set(e)
                                           for e in entry["errors"])


@SETTINGS
@given(api_documents)
def test_random_api_documents_never_raise(registry, doc):
    check_outcome(prepare(doc, registry))


VALID = {"1": {"class_type": "NumberSource", "inputs": {"value": 3}},
         "2": {"class_type": "AddInts", "inputs": {"a": ["1", 0], "b": 4}},
         "3": {"class_type": "Switch", "inputs": {"select": True, "on_true": ["2", 0], "on_false": ["1", 0]}},
         "4": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}}}


@SETTINGS
@given(st.lists(st.tuples(node_ids, input_names, input_values), max_size=4), st.booleans())
def test_mutated_valid_workflows_plan_or_report_and_runs_do_not_raise(registry, mutations, run):
    doc = copy.deepcopy(VALID)
    for node_id, name, value in mutations:
        doc.setdefault(node_id, {"class_type": "AddInts", "inputs": {}})
        if isinstance(doc[node_id], dict) and isinstance(doc[node_id].get("inputs"), dict):
            doc[node_id]["inputs"][name] = value
    checked = prepare(doc, registry)
    check_outcome(checked)
    if checked.ok and run:
        from graph import Executor

        assert Executor().execute(checked.plan).status in ("success", "error")


ui_links = st.lists(st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(-1, 2), st.integers(1, 5),
                              st.integers(0, 2), st.sampled_from(["INT", "*", "STRING"])).map(list), max_size=6)


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 5), st.sampled_from(CLASS_NAMES), st.lists(json_values, max_size=4),
                          st.sampled_from([0, 2, 4, None, "x"]), st.lists(st.integers(1, 6) | st.none(), max_size=3)),
                max_size=5), ui_links)
def test_random_ui_documents_never_raise(registry, nodes, links):
    ui_nodes = []
    for node_id, node_type, widgets, mode, input_links in nodes:
        node = ui_node(node_id, node_type, widgets, inputs=[(f"in{i}", "INT", link) for i, link in enumerate(input_links)],
                       mode=mode)
        ui_nodes.append(node)
    check_outcome(prepare(document(ui_nodes, links), registry))


subgraph_ids = st.sampled_from(["sg-a", "sg-b"])
subgraph_links = st.lists(st.fixed_dictionaries({
    "id": st.integers(1, 6), "origin_id": st.sampled_from([-10, 1, 2, 3]), "origin_slot": st.integers(-1, 2),
    "target_id": st.sampled_from([-20, 1, 2, 3]), "target_slot": st.integers(-1, 2), "type": st.just("INT")}),
    max_size=5)


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 4), st.sampled_from([*CLASS_NAMES, "sg-a", "sg-b"]),
                          st.lists(json_values, max_size=3), st.sampled_from([0, 2, 4]),
                          st.lists(st.integers(1, 6) | st.none(), max_size=2)), max_size=4),
       ui_links,
       st.lists(st.tuples(subgraph_ids, st.lists(st.tuples(st.integers(1, 3), st.sampled_from([*CLASS_NAMES, "sg-a", "sg-b"]),
                                                           st.lists(st.integers(1, 6) | st.none(), max_size=2)),
                                                 max_size=3),
                          subgraph_links | json_values), max_size=2),
       json_values)
def test_random_ui_documents_with_subgraphs_never_raise(registry, nodes, links, definitions, garbage):
    """Instances, nested and self-nesting subgraphs, broken boundary links, malformed definitions."""
    ui_nodes = [ui_node(node_id, node_type, widgets, inputs=[(f"in{i}", "INT", link) for i, link in enumerate(ins)],
                        outputs=[("out", "INT", [1, 2])], mode=mode)
                for node_id, node_type, widgets, mode, ins in nodes]
    subgraphs = []
    for subgraph_id, inner, inner_links in definitions:
        subgraphs.append({"id": subgraph_id, "nodes": [ui_node(i, t, inputs=[(f"in{k}", "INT", link)
                                                                            for k, link in enumerate(ins)])
                                                      for i, t, ins in inner],
                          "links": inner_links})
    # Always an instance of "sg-a" feeding an output, so that its definition is entered.
    ui_nodes += [ui_node(9, "sg-a", outputs=[("out", "INT", [7])]), ui_node(8, "ShowValue", inputs=[("value", "*", 7)])]
    doc = document(ui_nodes, [*links, [7, 9, 0, 8, 0, "INT"]])
    if not any(d["id"] == "sg-a" for d in subgraphs):
        subgraphs.append({"id": "sg-a", "nodes": [], "links": garbage})
    doc["definitions"] = {"subgraphs": subgraphs + ([garbage] if garbage is not None else [])}
    check_outcome(prepare(doc, registry))
