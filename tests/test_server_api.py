"""The ComfyUI-compatible HTTP and websocket API against a real server on a free port."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import uuid
from typing import Any

import pytest
import requests
from websockets.sync.client import connect

from server import ROUTES
from tests.server_support import (
    REPO,
    ServerThread,
    make_config,
    submit,
    value_prompt,
    wait_history,
    wait_prompt,
    wait_until,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    (root / "models" / "checkpoints").mkdir(parents=True)
    (root / "models" / "checkpoints" / "tiny.safetensors").write_bytes(b"x")
    (root / "models" / "embeddings").mkdir(parents=True)
    (root / "models" / "embeddings" / "happy.pt").write_bytes(b"x")
    with ServerThread(make_config(root, cpu=True)) as running:  # cpu: /system_stats needs no torch
        yield running


def receive_until(socket, predicate, limit: int = 500) -> list[Any]:
    """Messages (decoded JSON, or raw bytes) up to and including the first matching one."""
    seen = []
    for _ in range(limit):
        raw = socket.recv(timeout=20)
        message = raw if isinstance(raw, bytes) else json.loads(raw)
        seen.append(message)
        if predicate(message):
            return seen
    raise AssertionError(f"no matching message in {seen[-5:]}")


def finished(prompt_id: str):
    return lambda m: isinstance(m, dict) and m["type"] == "executing" and m["data"]["node"] is None \
        and m["data"]["prompt_id"] == prompt_id


def test_object_info_and_single_node(server):
    info = requests.get(f"{server.url}/object_info").json()
    assert {"NumberSource", "ShowValue", "SaveTestImage"} <= set(info)
    assert info["NumberSource"]["input"]["required"]["value"][0] == "INT"
    one = requests.get(f"{server.url}/api/object_info/NumberSource").json()
    assert one == {"NumberSource": info["NumberSource"]}
    assert requests.get(f"{server.url}/object_info/NoSuchNode").json() == {}


def test_every_route_is_served_under_api_and_described(server):
    document = requests.get(f"{server.url}/openapi.json").json()
    for route in ROUTES:
        described = re.sub(r"{(\w+):[^}]+}", r"{\1}", route.path)  # OpenAPI has no aiohttp path regexes
        for path in (described, "/api" + described):
            assert route.method.lower() in document["paths"][path]
    assert requests.get(f"{server.url}/api/prompt").json() == requests.get(f"{server.url}/prompt").json()


def test_prompt_runs_and_events_reach_the_submitting_client(server):
    client_id, other_id = uuid.uuid4().hex, uuid.uuid4().hex
    with connect(f"{server.ws_url}?clientId={client_id}") as socket, \
            connect(f"{server.ws_url}?clientId={other_id}") as other:
        hello = json.loads(socket.recv(timeout=10))
        assert hello["type"] == "status" and hello["data"]["sid"] == client_id
        assert json.loads(other.recv(timeout=10))["type"] == "status"
        prompt = {"1": {"class_type": "SlowSteps", "inputs": {"steps": 4, "value": 1}},
                  "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
        reply = submit(server.url, prompt, client_id=client_id)
        assert reply["node_errors"] == {} and isinstance(reply["number"], (int, float))
        messages = receive_until(socket, finished(reply["prompt_id"]))
        types = [m["type"] for m in messages]
        assert "execution_start" in types
        assert types[-2:] == ["execution_success", "executing"]  # ComfyUI's order: the outcome, then node null
        progress = [m["data"] for m in messages if m["type"] == "progress"]
        assert [p["value"] for p in progress] == [1, 2, 3, 4] and progress[0]["max"] == 4
        executed = [m["data"] for m in messages if m["type"] == "executed"]
        assert executed == [{"node": "2", "display_node": "2", "output": {"value": [5]},
                             "prompt_id": reply["prompt_id"]}]
        # History is written before the final events go out.
        entry = requests.get(f"{server.url}/history/{reply['prompt_id']}").json()[reply["prompt_id"]]
        assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
        assert entry["outputs"] == {"2": {"value": [5]}}
        assert entry["prompt"][1] == reply["prompt_id"] and entry["prompt"][4] == ["2"]
        # The other client saw status broadcasts but none of this prompt's events.
        other_messages = receive_until(other, lambda m: m["type"] == "status"
                                       and m["data"]["status"]["exec_info"]["queue_remaining"] == 0)
        assert {m["type"] for m in other_messages} == {"status"}


def test_queue_remaining_counts_running_prompt(server):
    blocker = submit(server.url, wait_prompt(60, tag=1))
    wait_until(lambda: requests.get(f"{server.url}/queue").json()["queue_running"])
    assert requests.get(f"{server.url}/prompt").json() == {"exec_info": {"queue_remaining": 1}}
    with connect(server.ws_url) as socket:
        status = json.loads(socket.recv(timeout=10))
        assert status["data"]["status"]["exec_info"]["queue_remaining"] == 1
    requests.post(f"{server.url}/interrupt", json={"prompt_id": blocker["prompt_id"]})
    entry = wait_history(server.url, blocker["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    assert any(event == "execution_interrupted" for event, _ in entry["status"]["messages"])


def test_queue_delete_clear_front_and_interrupt_by_id(server):
    blocker = submit(server.url, wait_prompt(60, tag=2))
    wait_until(lambda: requests.get(f"{server.url}/queue").json()["queue_running"])
    first = submit(server.url, value_prompt(11))
    second = submit(server.url, value_prompt(12))
    third = submit(server.url, value_prompt(13))
    urgent = submit(server.url, value_prompt(14), front=True)
    queue = requests.get(f"{server.url}/queue").json()
    assert [item[1] for item in queue["queue_running"]] == [blocker["prompt_id"]]
    pending_ids = [item[1] for item in queue["queue_pending"]]
    assert pending_ids == [urgent["prompt_id"], first["prompt_id"], second["prompt_id"], third["prompt_id"]]
    assert requests.get(f"{server.url}/prompt").json()["exec_info"]["queue_remaining"] == 5

    assert requests.post(f"{server.url}/queue", json={"delete": [second["prompt_id"]]}).status_code == 200
    pending_ids = [item[1] for item in requests.get(f"{server.url}/queue").json()["queue_pending"]]
    assert second["prompt_id"] not in pending_ids and len(pending_ids) == 3

    # Interrupting by another id leaves the running prompt alone.
    requests.post(f"{server.url}/interrupt", json={"prompt_id": first["prompt_id"]})
    assert requests.get(f"{server.url}/queue").json()["queue_running"][0][1] == blocker["prompt_id"]

    assert requests.post(f"{server.url}/queue", json={"clear": True}).status_code == 200
    assert requests.get(f"{server.url}/queue").json()["queue_pending"] == []
    requests.post(f"{server.url}/interrupt", json={"prompt_id": blocker["prompt_id"]})
    assert wait_history(server.url, blocker["prompt_id"])["status"]["completed"] is False
    for cleared in (first, second, third, urgent):
        assert requests.get(f"{server.url}/history/{cleared['prompt_id']}").json() == {}


def test_front_runs_before_earlier_prompts(server):
    blocker = submit(server.url, wait_prompt(60, tag=3))
    wait_until(lambda: requests.get(f"{server.url}/queue").json()["queue_running"])
    late = submit(server.url, value_prompt(21))
    early = submit(server.url, value_prompt(22), front=True)
    requests.post(f"{server.url}/interrupt")
    wait_history(server.url, late["prompt_id"])
    order = list(requests.get(f"{server.url}/history").json())
    assert order.index(blocker["prompt_id"]) < order.index(early["prompt_id"]) < order.index(late["prompt_id"])


def test_validation_errors_are_400_with_node_errors(server):
    bad = {"1": {"class_type": "NumberSource", "inputs": {"value": 5000}},
           "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    response = requests.post(f"{server.url}/prompt", json={"prompt": bad})
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"
    assert body["node_errors"]["1"]["class_type"] == "NumberSource"
    no_prompt = requests.post(f"{server.url}/prompt", json={"client_id": "x"})
    assert no_prompt.status_code == 400 and no_prompt.json()["error"]["type"] == "no_prompt"
    assert requests.post(f"{server.url}/prompt", data=b"{not json").status_code == 400
    no_outputs = requests.post(f"{server.url}/prompt", json={"prompt": {"1": value_prompt(1)["1"]}})
    assert no_outputs.status_code == 400 and no_outputs.json()["error"]["type"] == "prompt_no_outputs"


def test_node_failure_reports_execution_error(server):
    client_id = uuid.uuid4().hex
    with connect(f"{server.ws_url}?clientId={client_id}") as socket:
        prompt = {"1": {"class_type": "Fail", "inputs": {"value": 7}},
                  "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
        reply = submit(server.url, prompt, client_id=client_id)
        messages = receive_until(socket, finished(reply["prompt_id"]))
    errors = [m["data"] for m in messages if m["type"] == "execution_error"]
    assert errors[0]["node_id"] == "1" and errors[0]["node_type"] == "Fail"
    assert "failing on purpose with 7" in errors[0]["exception_message"]
    entry = wait_history(server.url, reply["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    # The server keeps working afterwards.
    assert wait_history(server.url, submit(server.url, value_prompt(3))["prompt_id"])["outputs"]["2"] == {
        "value": [3]}


def test_ui_format_prompt_is_converted_and_kept_in_extra_data(server):
    ui = {"last_node_id": 2, "last_link_id": 1, "version": 0.4, "groups": [], "config": {}, "extra": {},
          "nodes": [
              {"id": 1, "type": "NumberSource", "mode": 0, "inputs": [],
               "outputs": [{"name": "value", "type": "INT", "links": [1]}], "widgets_values": [42]},
              {"id": 2, "type": "ShowValue", "mode": 0, "inputs": [{"name": "value", "type": "*", "link": 1}],
               "outputs": [], "widgets_values": []}],
          "links": [[1, 1, 0, 2, 0, "INT"]]}
    reply = submit(server.url, ui)
    entry = wait_history(server.url, reply["prompt_id"])
    assert entry["outputs"] == {"2": {"value": [42]}}
    item = entry["prompt"]
    assert item[2]["1"] == {"class_type": "NumberSource", "inputs": {"value": 42}}
    assert item[3]["extra_pnginfo"]["workflow"] == ui


def test_saved_image_is_viewable_and_previews_arrive_as_binary(server):
    # Previews go only to a client that asks for them with ComfyUI's feature flags (README).
    client_id = uuid.uuid4().hex
    with connect(f"{server.ws_url}?clientId={client_id}") as socket:
        socket.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        prompt = {"1": {"class_type": "SaveTestImage", "inputs": {"red": 200, "filename_prefix": "api"}},
                  "2": {"class_type": "PreviewSteps", "inputs": {"steps": 2}}}
        reply = submit(server.url, prompt, client_id=client_id)
        messages = receive_until(socket, finished(reply["prompt_id"]))
    frames = [m for m in messages if isinstance(m, bytes)]
    assert len(frames) == 2
    kind, length = struct.unpack(">II", frames[0][:8])
    metadata = json.loads(frames[0][8:8 + length])
    assert kind == 4 and frames[0][8 + length:10 + length] == b"\xff\xd8"
    assert metadata == {"node_id": "2", "display_node_id": "2", "parent_node_id": None, "real_node_id": "2",
                        "prompt_id": reply["prompt_id"], "image_type": "image/jpeg"}
    image = wait_history(server.url, reply["prompt_id"])["outputs"]["1"]["images"][0]
    assert image["type"] == "output" and image["filename"].startswith("api_")
    response = requests.get(f"{server.url}/view", params={"filename": image["filename"], "type": "output",
                                                          "subfolder": ""})
    assert response.status_code == 200 and response.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert response.headers["Content-Type"] == "image/png"
    preview = requests.get(f"{server.url}/view", params={"filename": image["filename"], "preview": "jpeg;80"})
    assert preview.status_code == 200 and preview.content[:2] == b"\xff\xd8"
    annotated = requests.get(f"{server.url}/view", params={"filename": f"{image['filename']} [output]"})
    assert annotated.content == response.content
    assert requests.get(f"{server.url}/view", params={"filename": "missing.png"}).status_code == 404


def test_history_paging_and_deletion(server):
    ids = [submit(server.url, value_prompt(100 + i))["prompt_id"] for i in range(3)]
    for prompt_id in ids:
        wait_history(server.url, prompt_id)
    newest = requests.get(f"{server.url}/history", params={"max_items": 2}).json()
    assert list(newest) == ids[1:]
    everything = list(requests.get(f"{server.url}/history").json())
    window = requests.get(f"{server.url}/history", params={"max_items": 1, "offset": 0}).json()
    assert list(window) == everything[:1]
    assert requests.get(f"{server.url}/history", params={"max_items": "x"}).status_code == 400
    requests.post(f"{server.url}/history", json={"delete": [ids[0]]})
    assert requests.get(f"{server.url}/history/{ids[0]}").json() == {}
    assert requests.get(f"{server.url}/history/{ids[1]}").json() != {}


def test_custom_prompt_id_and_duplicates(server):
    reply = submit(server.url, value_prompt(5), prompt_id="my-own-id")
    assert reply["prompt_id"] == "my-own-id"
    again = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(5), "prompt_id": "my-own-id"})
    assert again.status_code == 400


def test_partial_execution_targets(server):
    prompt = {**value_prompt(8), "3": {"class_type": "Fail", "inputs": {}},
              "4": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}}}
    reply = submit(server.url, prompt, partial_execution_targets=["2"])
    entry = wait_history(server.url, reply["prompt_id"])
    assert entry["status"]["status_str"] == "success" and list(entry["outputs"]) == ["2"]


def test_system_models_embeddings_extensions_free(server):
    stats = requests.get(f"{server.url}/system_stats").json()
    assert {"os", "ram_total", "ram_free", "python_version", "pytorch_version"} <= set(stats["system"])
    assert stats["devices"] and {"name", "type", "vram_total", "vram_free"} <= set(stats["devices"][0])
    assert "checkpoints" in requests.get(f"{server.url}/models").json()
    assert requests.get(f"{server.url}/models/checkpoints").json() == ["tiny.safetensors"]
    assert requests.get(f"{server.url}/models/nothing").status_code == 404
    assert requests.get(f"{server.url}/embeddings").json() == ["happy"]
    assert requests.get(f"{server.url}/extensions").json() == []
    assert requests.post(f"{server.url}/free", json={"unload_models": True, "free_memory": True}).status_code == 200
    assert requests.post(f"{server.url}/interrupt").status_code == 200  # empty body, nothing running


def test_start_up_does_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from server import create_app\n"
        "from tests.server_support import make_config\n"
        "create_app(make_config(Path(sys.argv[1]), node_packages=['nodes', 'tests.engine_nodes']))\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
