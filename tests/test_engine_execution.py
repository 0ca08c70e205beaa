"""Execution: caching by content, events, failures, interrupts, lists and lazy inputs."""

import threading

from graph import Executor, OutputCache, prepare


def chain(value=1, add=2, ids=("1", "2", "3")):
    a, b, c = ids
    return {a: {"class_type": "NumberSource", "inputs": {"value": value}},
            b: {"class_type": "AddInts", "inputs": {"a": [a, 0], "b": add}},
            c: {"class_type": "ShowValue", "inputs": {"value": [b, 0]}}}


def test_runs_and_reports_ui_outputs(runner):
    result = runner.run(chain())
    assert result.status == "success"
    assert result.outputs == {"3": {"value": [3]}}
    assert result.executed == ["1", "2", "3"]


def test_events_follow_comfyui_names_and_order(runner):
    runner.run(chain())
    # The executor ends with the outcome; `executing` with node null is the host's to send
    # after it (the server's worker does, as ComfyUI's prompt worker).
    assert runner.event_names() == ["execution_start", "executing", "executing", "executing", "executed",
                                    "execution_success"]
    executed = dict(runner.events)["executed"]
    assert executed["node"] == "3" and executed["display_node"] == "3" and executed["output"] == {"value": [3]}
    prompt_ids = {data["prompt_id"] for _, data in runner.events}
    assert len(prompt_ids) == 1


def test_rerun_is_fully_cached_and_resends_ui(runner):
    runner.run(chain())
    result = runner.run(chain())
    assert result.executed == [] and result.cached == ["3"]
    assert result.outputs == {"3": {"value": [3]}}
    assert ("execution_cached", runner.events[1][1]) == runner.events[1]
    # Every node of the prompt that does not run, not only the cached output (as ComfyUI).
    assert runner.events[1][1]["nodes"] == ["1", "2", "3"]
    assert "executed" in runner.event_names()


def test_renumbered_ids_hit_the_cache(runner):
    runner.run(chain())
    result = runner.run(chain(ids=("70", "80", "90")))
    assert result.executed == [] and result.outputs == {"90": {"value": [3]}}


def test_changing_a_constant_reruns_only_it_and_what_follows(runner):
    document = {"1": {"class_type": "NumberSource", "inputs": {"value": 1}},
                "2": {"class_type": "NumberSource", "inputs": {"value": 10}},
                "3": {"class_type": "AddInts", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
                "4": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}}}
    runner.run(document)
    document["2"]["inputs"]["value"] = 20
    result = runner.run(document)
    assert result.executed == ["2", "3", "4"]
    assert result.outputs["4"] == {"value": [21]}


def test_unrequested_inputs_do_not_change_the_key(runner):
    runner.run(chain())
    document = chain()
    document["2"]["inputs"]["not_declared"] = 5
    assert runner.run(document).executed == []


def test_non_deterministic_nodes_always_run(runner):
    document = {"1": {"class_type": "RandomNumber", "inputs": {}},
                "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    first = runner.run(document)
    second = runner.run(document)
    assert second.executed == ["1", "2"]
    assert first.outputs["2"] != second.outputs["2"]


def test_fingerprint_of_outside_state_invalidates(runner, tmp_path):
    path = tmp_path / "note.txt"
    path.write_text("one")
    document = {"1": {"class_type": "ReadTextFile", "inputs": {"path": str(path)}},
                "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    assert runner.run(document).outputs["2"] == {"value": ["one"]}
    assert runner.run(document).executed == []
    path.write_text("three")
    result = runner.run(document)
    assert result.executed == ["1", "2"] and result.outputs["2"] == {"value": ["three"]}


def test_cache_budget_evicts_least_recently_used(registry):
    from tests.conftest import Runner

    # Each workflow caches two entries of ~400 bytes: the blob and the UI payload holding it.
    cache = OutputCache(budget_bytes=1700, max_entry_share=1.0)  # every entry may be cached
    runner = Runner(registry, cache)

    def blob(tag):
        return {"1": {"class_type": "Blob", "inputs": {"size": 400, "tag": tag}},
                "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}

    runner.run(blob(1))
    runner.run(blob(2))
    assert runner.run(blob(2)).executed == []          # both fit
    runner.run(blob(3))                                 # over budget: tag 1, least recently used, goes
    assert cache.total_bytes <= 1700
    assert runner.run(blob(2)).executed == []
    assert runner.run(blob(1)).executed == ["1", "2"]
    assert cache.total_bytes <= 1700


def test_outputs_over_a_share_of_the_budget_are_not_kept(registry):
    from tests.conftest import Runner

    cache = OutputCache(budget_bytes=4000, max_entry_share=0.25)
    runner = Runner(registry, cache)
    small = {"1": {"class_type": "Blob", "inputs": {"size": 400, "tag": 1}},
             "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    large = {"1": {"class_type": "Blob", "inputs": {"size": 1500, "tag": 2}},
             "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    assert runner.run(small).status == "success" and runner.run(large).status == "success"
    assert runner.run(small).executed == []             # kept
    assert runner.run(large).executed == ["1", "2"]     # ran, but was not held after its prompt
    assert cache.total_bytes < 1500                     # the large blob alone is over 1500 bytes


def test_failing_node_reports_and_engine_stays_usable(runner):
    document = {"1": {"class_type": "NumberSource", "inputs": {"value": 4}},
                "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}},
                "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}
    result = runner.run(document)
    assert result.status == "error" and result.executed == ["1"]
    error = dict(runner.events)["execution_error"]
    assert error["node_id"] == "2" and error["node_type"] == "Fail"
    assert error["exception_message"] == "failing on purpose with 4"
    assert error["exception_type"] == "builtins.ValueError"
    assert any("failing on purpose" in line for line in error["traceback"])
    assert error["current_outputs"] == ["1"]
    assert "executed" not in runner.event_names() and "execution_success" not in runner.event_names()
    assert runner.run(chain()).status == "success"
    # the node that ran before the failure stays cached
    document["2"] = {"class_type": "AddInts", "inputs": {"a": ["1", 0], "b": 1}}
    assert runner.run(document).executed == ["2", "3"]


def test_wrong_number_of_returned_values_is_a_node_error(registry):
    from graph import Input, Node, Output

    class TwoOutputs(Node):
        value = Input("INT")
        outputs = (Output("INT"), Output("INT"))

        def execute(self, value):
            return (value,)

    registry.register(TwoOutputs)
    from tests.conftest import Runner

    result = Runner(registry).run({"1": {"class_type": "TwoOutputs", "inputs": {"value": 1}},
                                   "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 1]}}})
    assert result.status == "error" and "declares 2 output" in result.error["exception_message"]


def test_interrupt_at_a_progress_checkpoint(runner):
    document = {"1": {"class_type": "InterruptAfter", "inputs": {"steps": 10, "stop_at": 3}},
                "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    result = runner.run(document)
    assert result.status == "interrupted"
    progress = [data["value"] for name, data in runner.events if name == "progress"]
    assert progress == [1, 2]
    interrupted = dict(runner.events)["execution_interrupted"]
    assert interrupted["node_id"] == "1" and interrupted["node_type"] == "InterruptAfter"
    assert runner.run(chain()).status == "success"


def test_interrupt_between_nodes(runner):
    interrupt = threading.Event()
    interrupt.set()
    result = runner.run(chain(), interrupt=interrupt)
    assert result.status == "interrupted" and result.executed == []


def test_progress_events(runner):
    document = {"1": {"class_type": "SlowSteps", "inputs": {"steps": 4, "value": 1}},
                "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    runner.run(document)
    progress = [data for name, data in runner.events if name == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 4, "1"), (2, 4, "1"), (3, 4, "1"), (4, 4, "1")]


def test_list_outputs_map_downstream_nodes(runner):
    document = {"1": {"class_type": "IntRange", "inputs": {"count": 4}},
                "2": {"class_type": "AddInts", "inputs": {"a": ["1", 0], "b": 10}},
                "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}},
                "4": {"class_type": "SumList", "inputs": {"values": ["2", 0]}},
                "5": {"class_type": "ShowValue", "inputs": {"value": ["4", 0]}}}
    result = runner.run(document)
    assert result.outputs["3"] == {"value": [10, 11, 12, 13]}
    assert result.outputs["5"] == {"value": [46]}


def test_shorter_lists_repeat_their_last_item(runner):
    document = {"1": {"class_type": "IntRange", "inputs": {"count": 3}},
                "2": {"class_type": "IntRange", "inputs": {"count": 1}},
                "3": {"class_type": "AddInts", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
                "4": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}}}
    assert runner.run(document).outputs["4"] == {"value": [0, 1, 2]}


def test_empty_list_runs_nothing_downstream(runner):
    document = {"1": {"class_type": "IntRange", "inputs": {"count": 0}},
                "2": {"class_type": "AddInts", "inputs": {"a": ["1", 0], "b": 1}},
                "3": {"class_type": "SumList", "inputs": {"values": ["2", 0]}},
                "4": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}}}
    assert runner.run(document).outputs["4"] == {"value": [0]}


def test_lazy_switch_evaluates_only_the_chosen_branch(runner):
    def document(select):
        return {"1": {"class_type": "NumberSource", "inputs": {"value": 1}},
                "2": {"class_type": "Fail", "inputs": {"value": 2}},
                "3": {"class_type": "Switch", "inputs": {"select": select, "on_true": ["1", 0], "on_false": ["2", 0]}},
                "4": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}}}

    result = runner.run(document(True))
    assert result.status == "success" and result.outputs["4"] == {"value": [1]}
    assert "2" not in result.executed
    failed = runner.run(document(False))
    assert failed.status == "error" and failed.error["node_id"] == "2"


def test_lazy_branch_shared_with_a_strict_consumer_runs_once(runner):
    document = {"1": {"class_type": "NumberSource", "inputs": {"value": 5}},
                "2": {"class_type": "AddInts", "inputs": {"a": ["1", 0], "b": 1}},
                "3": {"class_type": "Switch", "inputs": {"select": False, "on_true": ["1", 0], "on_false": ["2", 0]}},
                "4": {"class_type": "AddInts", "inputs": {"a": ["3", 0], "b": ["2", 0]}},
                "5": {"class_type": "ShowValue", "inputs": {"value": ["4", 0]}}}
    result = runner.run(document)
    assert result.outputs["5"] == {"value": [12]}
    assert sorted(result.executed) == ["1", "2", "3", "4", "5"]


def test_output_node_with_passthrough_feeds_another(runner):
    document = {"1": {"class_type": "NumberSource", "inputs": {"value": 5}},
                "2": {"class_type": "ShowPassThrough", "inputs": {"value": ["1", 0]}},
                "3": {"class_type": "AddInts", "inputs": {"a": ["2", 0], "b": 1}},
                "4": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}}}
    result = runner.run(document)
    assert result.outputs == {"2": {"value": [5]}, "4": {"value": [6]}}


def test_run_context_wraps_the_whole_prompt(registry):
    import contextlib

    entered = []

    @contextlib.contextmanager
    def marker():
        entered.append("in")
        yield
        entered.append("out")

    checked = prepare(chain(), registry)
    Executor(run_context=marker).execute(checked.plan)
    assert entered == ["in", "out"]
