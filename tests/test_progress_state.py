"""``progress_state`` websocket messages when a node fails: the node is marked ``error``
(ComfyUI's ``NodeState.Error`` in comfy_execution/progress.py), the nodes before it
``finished``, and the message comes before ``execution_error``."""

from __future__ import annotations

import json
import uuid

import pytest
from websockets.sync.client import connect

from latentgraph_server.progress_state import ProgressState
from tests.server_support import TEST_PACKAGES, ServerThread, make_config, submit


def test_a_failed_node_is_marked_error_and_keeps_its_progress():
    state = ProgressState("p")
    state.update("executing", {"node": "1"})
    state.update("executed", {"node": "1"})
    state.update("executing", {"node": "2"})
    state.update("progress", {"node": "2", "value": 3, "max": 10})
    message = state.close([("execution_error", {"prompt_id": "p", "node_id": "2", "exception_type": "ValueError"})])
    assert {k: (v["state"], v["value"], v["max"]) for k, v in message["nodes"].items()} == {
        "1": ("finished", 1.0, 1.0), "2": ("error", 3.0, 10.0)}


def test_success_and_host_errors_close_as_before():
    state = ProgressState("p")
    state.update("executing", {"node": "1"})
    assert state.close([("execution_success", {"prompt_id": "p"})])["nodes"]["1"]["state"] == "finished"
    assert state.close([("execution_success", {"prompt_id": "p"})]) is None  # nothing left to tell
    # An error no node caused (node_id None, e.g. a prompt no longer valid) marks nothing.
    assert ProgressState("q").close([("execution_error", {"prompt_id": "q", "node_id": None})]) is None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress_state")
    with ServerThread(make_config(root, cpu=True, node_packages=TEST_PACKAGES)) as running:
        yield running


def test_the_server_marks_the_failing_node_before_execution_error(server):
    prompt = {"1": {"class_type": "NumberSource", "inputs": {"value": 2}},
              "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}
    client_id = uuid.uuid4().hex
    with connect(f"{server.ws_url}?clientId={client_id}") as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"
        prompt_id = submit(server.url, prompt, client_id=client_id)["prompt_id"]
        messages = []
        while not messages or not (messages[-1]["type"] == "executing" and messages[-1]["data"]["node"] is None):
            raw = socket.recv(timeout=60)
            if isinstance(raw, str):
                messages.append(json.loads(raw))
    kinds = [m["type"] for m in messages]
    last_state = max(i for i, kind in enumerate(kinds) if kind == "progress_state")
    assert last_state < kinds.index("execution_error")
    final = messages[last_state]["data"]
    assert final["prompt_id"] == prompt_id
    assert {k: v["state"] for k, v in final["nodes"].items()} == {"1": "finished", "2": "error"}
