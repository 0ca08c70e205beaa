"""The prepared-plan memo (graph/memo.py) and per-plan signatures (graph/signatures.py).

Each test would fail if the memo handed back a stale plan or a stale cache key.
"""

from __future__ import annotations

import copy

import pytest

from graph import Engine, Executor, Input, Node, NodeRegistry, Output, build_registry
from graph import prepare as prepare_once
from graph.cache import canonical_json, signature
from graph.context import ExecutionContext
from graph.memo import PreparedMemo, document_key
from graph.signatures import plan_signatures
from graph.workflow import Link
from nodes.models.folders import ModelFolders
from nodes.sd.runtime import Runtime
from tests.engine_nodes import TEST_NODES

_MEMOS: dict[int, PreparedMemo] = {}  # one memo per registry, as an Engine keeps it


def memo_of(registry: NodeRegistry) -> PreparedMemo:
    return _MEMOS.setdefault(id(registry), PreparedMemo())


def prepare(document, registry, targets=None, runtime=None):
    """``graph.prepare`` with the registry's memo, as ``Engine.prepare`` calls it."""
    return prepare_once(document, registry, targets, runtime, memo=memo_of(registry))


class PickName(Node):
    """A combo whose choices come from the runtime, like a model-file list."""

    name = Input(choices=lambda runtime: list((runtime or {}).get("names", [])))
    outputs = (Output("STRING"),)

    def execute(self, name):
        return (name,)


class _AllowedInput(Input):
    """An input whose own check reads the runtime (a plugin may declare such inputs)."""

    def check_constant(self, value, runtime=None):
        if value not in (runtime or {}).get("allowed", ()):
            return "value_not_in_list", f"{value!r} is not allowed"
        return None


class PickAllowed(Node):
    value = _AllowedInput("STRING")
    outputs = (Output("STRING"),)

    def execute(self, value):
        return (value,)


@pytest.fixture
def registry() -> NodeRegistry:
    registry = NodeRegistry()
    for cls in (*TEST_NODES, PickName, PickAllowed):
        registry.register(cls)
    return registry


def chain(value=1, add=2, ids=("1", "2", "3")):
    a, b, c = ids
    return {a: {"class_type": "NumberSource", "inputs": {"value": value}},
            b: {"class_type": "AddInts", "inputs": {"a": [a, 0], "b": add}},
            c: {"class_type": "ShowValue", "inputs": {"value": [b, 0]}}}


def run(executor, registry, document, runtime=None):
    checked = prepare(document, registry, runtime=runtime)
    assert checked.ok, checked.response()
    return checked.plan, executor.execute(checked.plan)


def test_same_document_reuses_the_plan_and_is_fully_cached(registry):
    executor = Executor()
    first_plan, first = run(executor, registry, chain())
    again_plan, again = run(executor, registry, chain())  # an equal document, another object
    assert again_plan is first_plan
    assert first.executed == ["1", "2", "3"] and again.executed == [] and again.outputs == first.outputs
    assert prepare_once(chain(), registry).plan is not first_plan  # no memo


def test_changed_constant_in_the_same_object_is_not_a_stale_hit(registry):
    executor = Executor()
    document = chain()
    run(executor, registry, document)
    document["2"]["inputs"]["b"] = 40
    plan, result = run(executor, registry, document)
    assert plan.workflow.nodes["2"].inputs["b"] == 40
    assert result.executed == ["2", "3"] and result.outputs["3"] == {"value": [41]}


@pytest.mark.parametrize("bad", [True, 1.5, "1"])
def test_values_equal_in_python_are_told_apart(registry, bad):
    # True == 1 and [a, b] == (a, b) in Python; the memo key must still tell them apart.
    assert prepare(chain(add=1), registry).ok
    checked = prepare(chain(add=bad), registry)
    assert not checked.ok and checked.node_errors["2"]["errors"][0]["type"] == "invalid_input_type"


def test_tuple_constant_is_not_taken_for_a_link(registry):
    linked = {"1": {"class_type": "NumberSource", "inputs": {"value": 5}},
              "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    as_tuple = copy.deepcopy(linked)
    as_tuple["2"]["inputs"]["value"] = ("1", 0)
    executor = Executor()
    assert run(executor, registry, linked)[1].outputs["2"] == {"value": [5]}
    assert run(executor, registry, as_tuple)[1].outputs["2"] == {"value": [("1", 0)]}


def test_removed_choice_is_an_error_and_restoring_it_is_valid_again(registry):
    runtime = {"names": ["a.safetensors", "b.safetensors"]}
    document = {"1": {"class_type": "PickName", "inputs": {"name": "b.safetensors"}},
                "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    assert prepare(document, registry, runtime=runtime).ok
    runtime["names"].remove("b.safetensors")
    checked = prepare(document, registry, runtime=runtime)
    assert not checked.ok and checked.node_errors["1"]["errors"][0]["type"] == "value_not_in_list"
    runtime["names"].append("b.safetensors")
    assert prepare(document, registry, runtime=runtime).ok


def test_input_with_its_own_check_is_rechecked(registry):
    document = {"1": {"class_type": "PickAllowed", "inputs": {"value": "x"}},
                "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    assert prepare(document, registry, runtime={"allowed": ["x"]}).ok
    assert not prepare(document, registry, runtime={"allowed": ["y"]}).ok


def test_deleted_model_file_fails_validation(tmp_path):
    registry = build_registry("nodes", None)
    (tmp_path / "checkpoints").mkdir()
    model = tmp_path / "checkpoints" / "model.safetensors"
    model.write_bytes(b"not loaded by validation")
    runtime = Runtime(models=ModelFolders(tmp_path))
    document = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model.safetensors"}}}
    assert prepare(document, registry, ["4"], runtime).ok
    model.unlink()
    checked = prepare(document, registry, ["4"], runtime)
    assert not checked.ok
    assert checked.node_errors["4"]["errors"][0]["extra_info"]["input_name"] == "ckpt_name"


def test_fingerprint_change_reruns_the_node_and_what_follows(registry, tmp_path):
    path = tmp_path / "note.txt"
    path.write_text("one")
    document = {"1": {"class_type": "ReadTextFile", "inputs": {"path": str(path)}},
                "2": {"class_type": "JoinText", "inputs": {"text": ["1", 0], "suffix": "!"}},
                "3": {"class_type": "NumberSource", "inputs": {"value": 7}},
                "4": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}},
                "5": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}}}
    executor = Executor()
    plan, _ = run(executor, registry, document)
    signing = plan.signatures
    assert set(signing.fixed) == {"3", "5"} and [key.node_id for key in signing.per_run] == ["1", "2", "4"]
    assert run(executor, registry, document)[1].executed == []
    path.write_text("three")
    again_plan, result = run(executor, registry, document)
    assert again_plan is plan
    assert result.executed == ["1", "2", "4"] and result.outputs["4"] == {"value": ["three!"]}


def test_non_deterministic_node_and_its_consumers_run_every_time(registry):
    document = {"1": {"class_type": "RandomNumber", "inputs": {}},
                "2": {"class_type": "AddInts", "inputs": {"a": ["1", 0], "b": 1}},
                "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}},
                "4": {"class_type": "NumberSource", "inputs": {"value": 3}},
                "5": {"class_type": "ShowValue", "inputs": {"value": ["4", 0]}}}
    executor = Executor()
    run(executor, registry, document)
    _, again = run(executor, registry, document)
    assert again.executed == ["1", "2", "3"] and again.cached == ["5"]


def test_renumbered_ids_miss_the_memo_but_hit_the_output_cache(registry):
    executor = Executor()
    plan, _ = run(executor, registry, chain())
    renumbered_plan, result = run(executor, registry, chain(ids=("70", "80", "90")))
    assert renumbered_plan is not plan
    assert result.executed == [] and result.outputs == {"90": {"value": [3]}}


def test_memo_signatures_equal_freshly_computed_ones(registry, tmp_path):
    path = tmp_path / "note.txt"
    path.write_text("x")
    document = {"1": {"class_type": "NumberSource", "inputs": {"value": 1}},
                "2": {"class_type": "ReadTextFile", "inputs": {"path": str(path)}},
                "3": {"class_type": "AddInts", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
                "4": {"class_type": "JoinText", "inputs": {"text": ["2", 0]}},
                "5": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}},
                "6": {"class_type": "ShowValue", "inputs": {"value": ["4", 0]}}}
    context = ExecutionContext("p", lambda *_: None, None)
    plan = prepare(document, registry).plan
    assert prepare(document, registry).plan is plan
    signing = plan_signatures(plan)
    assert plan_signatures(plan) is signing
    assert signing.compute(context) == reference_signatures(plan, context)
    path.write_text("changed")
    changed = signing.compute(context)
    assert changed == reference_signatures(plan, context)
    assert len(set(changed.values())) == 6


def reference_signatures(plan, context):
    """Every signature computed directly, in plan order, with nothing kept between runs."""
    signatures = {}
    for node_id in plan.order:
        definition = plan.definitions[node_id]
        inputs = plan.workflow.nodes[node_id].inputs
        constants = {n: v for n, v in inputs.items() if not isinstance(v, Link)}
        upstream = sorted(f"{n}={signatures[v.source]}:{v.output_index}" for n, v in inputs.items()
                          if isinstance(v, Link))
        fingerprint = (canonical_json(definition.cls.fingerprint(context, **constants))
                       if definition.has_fingerprint else "")
        signatures[node_id] = signature(definition.name, canonical_json(constants), upstream, fingerprint)
    return signatures


def test_invalid_document_is_never_memoised(registry):
    document = chain(value=5000)  # above NumberSource's max
    for _ in range(2):
        checked = prepare(document, registry)
        assert not checked.ok and checked.node_errors["1"]["errors"][0]["type"] == "value_bigger_than_max"
    assert len(memo_of(registry)) == 0


def test_replaced_or_removed_node_class_is_seen(registry):
    document = chain()
    assert prepare(document, registry).ok

    class AddInts(Node):  # a different class under the same name (e.g. a reloaded plugin)
        a = Input("INT")
        b = Input("INT")
        outputs = (Output("INT"),)

        def execute(self, a, b):
            return (a - b,)

    registry.register(AddInts)
    result = Executor().execute(prepare(document, registry).plan)
    assert result.outputs["3"] == {"value": [-1]}
    del registry.definitions["AddInts"]
    checked = prepare(document, registry)
    assert not checked.ok and checked.node_errors["2"]["errors"][0]["type"] == "missing_node_type"


def test_targets_are_part_of_the_key(registry):
    document = {**chain(), "4": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    assert prepare(document, registry, ["3"]).plan.outputs == ["3"]
    assert prepare(document, registry, ["4"]).plan.outputs == ["4"]
    assert prepare(document, registry).plan.outputs == ["3", "4"]


def test_documents_with_other_objects_are_prepared_without_the_memo(registry):
    marker = object()
    document = {"1": {"class_type": "ShowValue", "inputs": {"value": marker}}}
    assert document_key(document, None) is None
    assert prepare(document, registry).ok and prepare(document, registry).ok
    assert len(memo_of(registry)) == 0


def test_memo_is_bounded_least_recently_used_first(registry):
    _MEMOS[id(registry)] = PreparedMemo(max_entries=2)

    def plan(value):  # with targets, so that each document takes one entry
        return prepare(chain(value=value), registry, ["3"]).plan

    first, second = plan(1), plan(2)
    assert plan(1) is first  # now the most recent
    plan(3)  # evicts value=2
    assert len(memo_of(registry)) == 2
    assert plan(1) is first
    assert plan(2) is not second


def test_the_engine_hands_the_worker_the_plan_it_prepared(registry):
    """POST /prompt prepares and holds; the worker takes that plan (once) instead of preparing again."""
    engine = Engine(registry)
    document = {**chain(), "4": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    checked = engine.prepare(document)
    engine.hold("p1", checked)
    assert engine.take("p1") is checked
    assert engine.take("p1") is None  # taken once; a restart's prompts are prepared again
    assert engine.prepare(document).plan is checked.plan  # the engine's memo


def test_held_plans_are_bounded(registry, monkeypatch):
    import graph.engine

    monkeypatch.setattr(graph.engine, "MAX_HELD_PROMPTS", 2)
    engine = Engine(registry)
    checked = engine.prepare(chain())
    for prompt_id in ("a", "b", "c"):
        engine.hold(prompt_id, checked)
    assert engine.take("a") is None and engine.take("b") is checked and engine.take("c") is checked
