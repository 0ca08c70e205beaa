"""The routes and websocket messages the official ComfyUI frontend uses, in ComfyUI's shapes
(latentgraph_server/settings.py, jobs.py, model_library.py, frontend.py, previews.py,
progress_state.py), and ComfyUI's prompt semantics (unknown classes, execution_cached,
SaveImageWebsocket). Test nodes only: quick."""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
import struct
import time
import uuid
from typing import Any

import pytest
import requests
from PIL import Image
from websockets.sync.client import connect

from latentgraph_server.config import config_from_args
from latentgraph_server.frontend import official_front_end_root
from latentgraph_server.hub import Connection, Hub
from server import ROUTES
from tests.server_support import (
    TEST_PACKAGES,
    ServerThread,
    make_config,
    submit,
    value_prompt,
    wait_history,
)

ASK_PREVIEWS = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("frontend_api")
    (root / "models" / "checkpoints" / "sub").mkdir(parents=True)
    (root / "models" / "checkpoints" / "sub" / "a.safetensors").write_bytes(_safetensors({"title": "A"}))
    (root / "models" / "checkpoints" / "plain.safetensors").write_bytes(_safetensors(None))
    # Our built-in nodes too, for SaveImageWebsocket and EmptyImage.
    with ServerThread(make_config(root, cpu=True, node_packages=[*TEST_PACKAGES, "nodes"])) as running:
        running.root = root
        yield running


def _safetensors(metadata: dict[str, str] | None) -> bytes:
    header: dict[str, Any] = {"__metadata__": metadata} if metadata is not None else {}
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text


def receive_until(socket, prompt_id: str) -> list[Any]:
    seen = []
    while True:
        raw = socket.recv(timeout=30)
        message = raw if isinstance(raw, bytes) else json.loads(raw)
        seen.append(message)
        if isinstance(message, dict) and message["type"] == "executing" and message["data"]["node"] is None \
                and message["data"]["prompt_id"] == prompt_id:
            return seen


# -- users and settings ---------------------------------------------------------------------------


def test_users_and_settings_round_trip_in_the_user_folder(server):
    assert requests.get(f"{server.url}/api/users").json()["storage"] == "server"
    assert requests.get(f"{server.url}/api/settings").json() == {}
    assert requests.get(f"{server.url}/api/settings/Comfy.Locale").json() is None
    assert requests.post(f"{server.url}/api/settings", json={"Comfy.Locale": "en", "A.B": [1, 2]}).status_code == 200
    assert requests.post(f"{server.url}/api/settings/Comfy.Locale", json="fr").status_code == 200
    assert requests.get(f"{server.url}/api/settings/Comfy.Locale").json() == "fr"
    assert requests.get(f"{server.url}/settings").json() == {"Comfy.Locale": "fr", "A.B": [1, 2]}
    stored = json.loads((server.root / "user" / "default" / "comfy.settings.json").read_text())
    assert stored == {"Comfy.Locale": "fr", "A.B": [1, 2]}
    assert requests.get(f"{server.url}/api/users").json() == {"storage": "server", "migrated": True}


def test_the_frontend_posts_settings_as_text_plain_from_its_own_pages(server):
    # fetch() with a string body and no Content-Type sends text/plain; the browser marks its own pages.
    own = requests.post(f"{server.url}/api/settings/Comfy.TutorialCompleted", data="true",
                        headers={"Content-Type": "text/plain;charset=UTF-8", "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200
    assert requests.get(f"{server.url}/api/settings/Comfy.TutorialCompleted").json() is True
    # Other pages (and clients that say nothing) still may not post JSON as text/plain.
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {}):
        refused = requests.post(f"{server.url}/api/settings/X.Y", data="1",
                                headers={"Content-Type": "text/plain", **headers})
        assert refused.status_code in (403, 415)
    assert requests.get(f"{server.url}/api/settings/X.Y").json() is None


@pytest.mark.parametrize("setting_id", ["..%2F..%2Fescape", "a%2Fb", "..", "a%5Cb", "x" * 300, "a%00b"])
def test_setting_ids_that_look_like_paths_are_refused(server, setting_id):
    before = sorted(p.relative_to(server.root).as_posix() for p in server.root.rglob("*"))
    for response in (requests.post(f"{server.url}/api/settings/{setting_id}", json=1),
                     requests.get(f"{server.url}/api/settings/{setting_id}")):
        assert response.status_code in (400, 404), (setting_id, response.status_code)
        assert "error" in response.json()
    assert sorted(p.relative_to(server.root).as_posix() for p in server.root.rglob("*")) == before


@pytest.mark.parametrize("body", [b"[1, 2]", b"not json", b"", b'"text"', b"{\"a/b\": 1}"])
def test_bad_settings_bodies_are_400(server, body):
    response = requests.post(f"{server.url}/api/settings", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["message"]


def test_settings_refuse_nan_and_a_store_past_its_bound(server):
    for body in (b'{"N": NaN}', b'{"N": [Infinity]}'):
        response = requests.post(f"{server.url}/api/settings", data=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400
    big = requests.post(f"{server.url}/api/settings/Big", json="x" * (5 * 1024 * 1024))
    assert big.status_code == 413 and big.json()["error"]["message"]
    settings = requests.get(f"{server.url}/api/settings").json()
    assert "N" not in settings and "Big" not in settings


def test_a_damaged_settings_file_reads_as_empty_and_is_replaced(server, tmp_path):
    with ServerThread(make_config(tmp_path, cpu=True)) as other:
        path = tmp_path / "user" / "default" / "comfy.settings.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{broken")
        assert requests.get(f"{other.url}/api/settings").json() == {}
        assert requests.post(f"{other.url}/api/settings/K", json=1).status_code == 200
        assert json.loads(path.read_text()) == {"K": 1}


# -- jobs -------------------------------------------------------------------------------------------


def test_jobs_lists_queue_and_history_as_comfyui(server):
    workflow = {"id": "wf-1", "nodes": []}
    saving = {"1": {"class_type": "SaveTestImage", "inputs": {"red": 7, "filename_prefix": "jobs"}}}
    done = submit(server.url, saving, extra_data={"extra_pnginfo": {"workflow": workflow}})
    wait_history(server.url, done["prompt_id"])
    failed = submit(server.url, {"1": {"class_type": "Fail", "inputs": {"value": 2}},
                                 "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}})
    wait_history(server.url, failed["prompt_id"])

    listing = requests.get(f"{server.url}/api/jobs", params={"status": "completed,failed,cancelled",
                                                             "limit": 200, "offset": 0}).json()
    jobs = {job["id"]: job for job in listing["jobs"]}
    assert listing["pagination"]["total"] >= 2 and listing["pagination"]["has_more"] is False
    ok = jobs[done["prompt_id"]]
    assert ok["status"] == "completed" and ok["workflow_id"] == "wf-1" and ok["outputs_count"] == 1
    preview = ok["preview_output"]
    assert preview["nodeId"] == "1" and preview["mediaType"] == "images" and preview["type"] == "output"
    assert preview["filename"].startswith("jobs_")
    assert isinstance(ok["create_time"], int) and ok["execution_end_time"] >= ok["execution_start_time"]
    bad = jobs[failed["prompt_id"]]
    assert bad["status"] == "failed" and bad["execution_error"]["node_id"] == "1"
    assert bad["execution_error"]["node_type"] == "Fail" and isinstance(bad["execution_error"]["traceback"], list)
    # newest first by default
    order = [job["id"] for job in listing["jobs"]]
    assert order.index(failed["prompt_id"]) < order.index(done["prompt_id"])

    detail = requests.get(f"{server.url}/api/jobs/{done['prompt_id']}").json()
    assert detail["outputs"]["1"]["images"][0]["filename"] == preview["filename"]
    assert detail["workflow"]["prompt"] == saving
    assert detail["workflow"]["extra_data"]["extra_pnginfo"]["workflow"] == workflow
    assert detail["execution_status"]["status_str"] == "success"
    assert requests.get(f"{server.url}/api/jobs/no-such-job").status_code == 404

    only = requests.get(f"{server.url}/api/jobs", params={"workflow_id": "wf-1"}).json()["jobs"]
    assert [job["id"] for job in only] == [done["prompt_id"]]
    page = requests.get(f"{server.url}/api/jobs", params={"status": "completed,failed", "limit": 1}).json()
    assert len(page["jobs"]) == 1 and page["pagination"]["has_more"] is True


def test_jobs_shows_running_and_pending_prompts(server):
    running = submit(server.url, {"1": {"class_type": "DelayedValue", "inputs": {"seconds": 1.5, "value": 1}},
                                  "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}})
    pending = submit(server.url, value_prompt(4))
    listing = requests.get(f"{server.url}/api/jobs", params={"status": "in_progress,pending"}).json()
    statuses = {job["id"]: job["status"] for job in listing["jobs"]}
    assert statuses[pending["prompt_id"]] == "pending"
    assert statuses[running["prompt_id"]] in ("pending", "in_progress")
    assert requests.get(f"{server.url}/api/jobs/{pending['prompt_id']}").json()["status"] in ("pending", "in_progress",
                                                                                               "completed")
    wait_history(server.url, pending["prompt_id"])


def test_cancelling_jobs_dequeues_pending_and_interrupts_running(server):
    slow = {"1": {"class_type": "DelayedValue", "inputs": {"seconds": 2.0, "value": 1}},
            "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    running = submit(server.url, slow)
    pending = submit(server.url, value_prompt(31))
    other = submit(server.url, value_prompt(32))
    reply = requests.post(f"{server.url}/api/jobs/{pending['prompt_id']}/cancel")
    assert reply.status_code == 200 and reply.json() == {"cancelled": [pending["prompt_id"]]}
    assert requests.get(f"{server.url}/api/jobs/{pending['prompt_id']}").status_code == 404
    deadline = time.monotonic() + 30
    while requests.get(f"{server.url}/api/jobs/{running['prompt_id']}").json()["status"] != "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    both = requests.post(f"{server.url}/api/jobs/cancel", json={"job_ids": [running["prompt_id"], "unknown"]})
    assert both.json() == {"cancelled": [running["prompt_id"]]}
    assert wait_history(server.url, running["prompt_id"])["status"]["status_str"] == "error"  # interrupted
    assert wait_history(server.url, other["prompt_id"])["status"]["status_str"] == "success"
    # A finished job is left alone.
    assert requests.post(f"{server.url}/api/jobs/{other['prompt_id']}/cancel").json() == {"cancelled": []}
    for body in ({"job_ids": "x"}, {"job_ids": [1]}, [], {}):
        assert requests.post(f"{server.url}/api/jobs/cancel", json=body).status_code == 400


def test_jobs_skips_a_damaged_row(server):
    done = submit(server.url, value_prompt(21))
    wait_history(server.url, done["prompt_id"])
    with sqlite3.connect(server.root / "queue.sqlite3") as db:
        db.execute("INSERT INTO prompts (prompt_id, number, state, prompt, extra_data, outputs_to_execute, created, "
                   "finished_seq, outputs, status) VALUES ('damaged', 1e9, 'done', '{', '{', '[]', 0, 1e9, '{', '[')")
    response = requests.get(f"{server.url}/api/jobs", params={"status": "completed,failed"})
    assert response.status_code == 200
    ids = [job["id"] for job in response.json()["jobs"]]
    assert done["prompt_id"] in ids and "damaged" not in ids


@pytest.mark.parametrize("params", [{"status": "bogus"}, {"limit": "x"}, {"limit": "0"}, {"offset": "-1"},
                                    {"sort_by": "name"}, {"sort_order": "up"}, {"limit": "9" * 40}])
def test_bad_jobs_queries_are_400(server, params):
    response = requests.get(f"{server.url}/api/jobs", params=params)
    assert response.status_code == 400 and response.json()["error"]["message"]


# -- model library, folders, features --------------------------------------------------------------


def test_model_library_routes(server):
    folders = requests.get(f"{server.url}/api/experiment/models").json()
    checkpoints = next(f for f in folders if f["name"] == "checkpoints")
    assert checkpoints["folders"][0] == str((server.root / "models" / "checkpoints").resolve())
    files = requests.get(f"{server.url}/api/experiment/models/checkpoints").json()
    assert [(f["name"], f["pathIndex"]) for f in files] == [("plain.safetensors", 0), ("sub/a.safetensors", 0)]
    assert requests.get(f"{server.url}/api/experiment/models/nope").status_code == 404
    metadata = requests.get(f"{server.url}/api/view_metadata/checkpoints", params={"filename": "sub/a.safetensors"})
    assert metadata.json() == {"title": "A"}
    for name in ("plain.safetensors", "../../etc/passwd.safetensors", "missing.safetensors", "sub/a.ckpt"):
        assert requests.get(f"{server.url}/api/view_metadata/checkpoints", params={"filename": name}).status_code == 404
    Image.new("RGB", (2, 2)).save(server.root / "models" / "checkpoints" / "sub" / "a.png")
    preview = requests.get(f"{server.url}/api/experiment/models/preview/checkpoints/0/sub/a.webp")
    assert preview.status_code == 200 and preview.content[:4] == b"\x89PNG"
    for path in ("checkpoints/0/plain.webp", "checkpoints/1/sub/a.webp", "checkpoints/x/sub/a.webp",
                 "nope/0/a.webp", "checkpoints/0/..%2F..%2Fmodels%2Fcheckpoints%2Fsub%2Fa.webp"):
        assert requests.get(f"{server.url}/api/experiment/models/preview/{path}").status_code == 404, path
    paths = requests.get(f"{server.url}/internal/folder_paths").json()
    assert paths["checkpoints"] == checkpoints["folders"]


def test_internal_files_lists_a_folder_newest_first(server):
    (server.root / "input" / "old.png").write_bytes(b"x")
    (server.root / "input" / "new.png").write_bytes(b"y")
    (server.root / "input" / ".hidden").write_bytes(b"z")
    os.utime(server.root / "input" / "old.png", (1, 1))
    names = requests.get(f"{server.url}/internal/files/input").json()
    assert names.index("new.png") < names.index("old.png") and ".hidden" not in names
    assert requests.get(f"{server.url}/internal/files/models").status_code == 400


def test_features_i18n_subgraphs_and_template_index(server):
    features = requests.get(f"{server.url}/api/features").json()
    assert features["supports_preview_metadata"] is True and features["max_upload_size"] > 0
    assert requests.get(f"{server.url}/api/i18n").json() == {}
    assert requests.get(f"{server.url}/api/global_subgraphs").json() == {}
    assert requests.get(f"{server.url}/api/global_subgraphs/x").status_code == 404
    assert requests.get(f"{server.url}/templates/index.json").json() == []
    assert requests.get(f"{server.url}/templates/index.fr.json").json() == []
    assert requests.get(f"{server.url}/templates/index_logo.json").json() == {}
    assert requests.get(f"{server.url}/templates/other.json").status_code == 404


def test_every_new_route_is_in_the_route_table():
    paths = {route.path for route in ROUTES}
    assert {"/users", "/settings", "/settings/{id}", "/jobs", "/jobs/{job_id}", "/experiment/models",
            "/experiment/models/{folder}", "/internal/folder_paths", "/internal/files/{type}", "/features",
            "/i18n", "/global_subgraphs", "/global_subgraphs/{id}", "/view_metadata/{folder}"} <= paths


def test_front_end_flags():
    official = config_from_args(["--front-end", "official"])
    assert official.web_directory == official_front_end_root() and (official.web_directory / "index.html").is_file()
    assert config_from_args(["--front-end-root", "somewhere"]).web_directory.name == "somewhere"
    assert config_from_args(["--web-directory", "elsewhere"]).web_directory.name == "elsewhere"
    assert config_from_args([]).web_directory.name == "web"  # our editor stays the default
    assert config_from_args([]).preview_method == "none"
    with pytest.raises(SystemExit):
        config_from_args(["--front-end", "official", "--front-end-root", "x"])
    with pytest.raises(SystemExit):
        config_from_args(["--preview-method", "fancy"])


def test_front_end_official_without_the_package_says_how_to_install_it(monkeypatch, capsys):
    import latentgraph_server.frontend as frontend_module

    def missing(name: str) -> Any:
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(frontend_module, "import_module", missing)
    with pytest.raises(SystemExit):
        config_from_args(["--front-end", "official"])
    assert "pip install 'latentgraph[frontend]'" in capsys.readouterr().err


# -- websocket: feature flags, previews, progress_state ----------------------------------------------


PREVIEW_PROMPT = {"1": {"class_type": "PreviewSteps", "inputs": {"steps": 2}}}


def run_with_socket(server, prompt: dict, *, ask: bool, fresh: bool = True, **fields: Any) -> list[Any]:
    if fresh:  # the prompt must execute, not come from the cache of an earlier test
        assert requests.post(f"{server.url}/free", json={"free_memory": True}).status_code == 200
    client_id = uuid.uuid4().hex
    with connect(f"{server.ws_url}?clientId={client_id}") as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"
        if ask:
            socket.send(ASK_PREVIEWS)
            assert json.loads(socket.recv(timeout=10)) == {
                "type": "feature_flags", "data": requests.get(f"{server.url}/features").json()}
        reply = submit(server.url, prompt, client_id=client_id, **fields)
        return receive_until(socket, reply["prompt_id"])


def test_api_clients_that_did_not_ask_get_no_binary_frames(server):
    messages = run_with_socket(server, PREVIEW_PROMPT, ask=False)
    assert not [m for m in messages if isinstance(m, bytes)]
    assert [m["data"]["value"] for m in messages if m["type"] == "progress"] == [1, 2]


def test_clients_that_ask_get_metadata_frames_unless_the_prompt_says_none(server):
    frames = [m for m in run_with_socket(server, PREVIEW_PROMPT, ask=True) if isinstance(m, bytes)]
    assert len(frames) == 2 and all(struct.unpack(">I", f[:4])[0] == 4 for f in frames)
    silenced = run_with_socket(server, PREVIEW_PROMPT, ask=True, extra_data={"preview_method": "none"})
    assert not [m for m in silenced if isinstance(m, bytes)]


def test_a_prompt_or_server_preview_method_reaches_clients_that_did_not_ask(server, tmp_path):
    # The frontend's per-prompt setting, as ComfyUI: legacy type-1 JPEG frames for a client without flags.
    frames = [m for m in run_with_socket(server, PREVIEW_PROMPT, ask=False, extra_data={"preview_method": "auto"})
              if isinstance(m, bytes)]
    assert len(frames) == 2 and struct.unpack(">II", frames[0][:8]) == (1, 1) and frames[0][8:10] == b"\xff\xd8"
    with ServerThread(make_config(tmp_path, cpu=True, preview_method="latent2rgb")) as other:
        frames = [m for m in run_with_socket(other, PREVIEW_PROMPT, ask=False) if isinstance(m, bytes)]
        assert len(frames) == 2


def test_progress_state_marks_nodes_running_then_finished(server):
    prompt = {"1": {"class_type": "NumberSource", "inputs": {"value": 2}},
              "2": {"class_type": "PreviewSteps", "inputs": {"steps": 2}}}
    messages = run_with_socket(server, prompt, ask=False)
    states = [m["data"] for m in messages if isinstance(m, dict) and m["type"] == "progress_state"]
    running = [s["nodes"]["2"] for s in states if s["nodes"].get("2", {}).get("state") == "running"]
    assert [(r["value"], r["max"]) for r in running][-2:] == [(1, 2), (2, 2)]
    last = states[-1]["nodes"]["2"]
    assert last["state"] == "finished" and last["node_id"] == last["display_node_id"] == last["real_node_id"] == "2"
    assert last["parent_node_id"] is None and states[-1]["prompt_id"] == last["prompt_id"]
    # finished before the prompt's end is announced
    end = next(i for i, m in enumerate(messages) if isinstance(m, dict) and m["type"] == "execution_success")
    assert messages.index(next(m for m in messages if isinstance(m, dict) and m["type"] == "progress_state"
                               and m["data"]["nodes"].get("2", {}).get("state") == "finished")) < end


# -- prompt semantics ------------------------------------------------------------------------------


def test_unknown_class_anywhere_refuses_the_prompt_naming_id_and_class(server):
    prompt = {**value_prompt(1), "7": {"class_type": "NoSuchNodeHere", "inputs": {}}}  # no output needs node 7
    response = requests.post(f"{server.url}/prompt", json={"prompt": prompt})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "missing_node_type" and "7" in error["message"] and "NoSuchNodeHere" in error["message"]
    assert response.json()["node_errors"]["7"]["class_type"] == "NoSuchNodeHere"
    # The only output is unknown: named, not hidden behind "Prompt has no outputs".
    alone = requests.post(f"{server.url}/prompt", json={"prompt": {"3": {"class_type": "SaveSomethingElse",
                                                                         "inputs": {}}}})
    assert alone.status_code == 400 and alone.json()["error"]["type"] == "missing_node_type"
    assert "SaveSomethingElse" in alone.json()["error"]["message"] and "3" in alone.json()["error"]["message"]


def test_execution_cached_lists_every_node_that_does_not_run(server):
    prompt = {"1": {"class_type": "NumberSource", "inputs": {"value": 11}},
              "2": {"class_type": "AddInts", "inputs": {"a": ["1", 0], "b": 1}},
              "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}},
              "4": {"class_type": "NumberSource", "inputs": {"value": 5}}}  # needed by no output
    first = run_with_socket(server, prompt, ask=False)
    assert [m["data"]["nodes"] for m in first if isinstance(m, dict) and m["type"] == "execution_cached"] == [["4"]]
    renumbered = {str(int(k) + 10): {**v, "inputs": {name: [str(int(x[0]) + 10), x[1]] if isinstance(x, list) else x
                                                      for name, x in v["inputs"].items()}} for k, v in prompt.items()}
    again = run_with_socket(server, renumbered, ask=False, fresh=False)
    cached = [m["data"]["nodes"] for m in again if isinstance(m, dict) and m["type"] == "execution_cached"]
    assert [sorted(nodes) for nodes in cached] == [["11", "12", "13", "14"]]
    assert not [m for m in again if isinstance(m, dict) and m["type"] == "executing" and m["data"]["node"]]


def test_save_image_websocket_sends_full_size_pngs_to_any_client(server):
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 24, "height": 16, "batch_size": 2,
                                                          "color": 0x090000}},
              "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
    registry_has = requests.get(f"{server.url}/object_info/SaveImageWebsocket").json()
    assert registry_has["SaveImageWebsocket"]["output_node"] is True
    messages = run_with_socket(server, prompt, ask=False)  # an API client: no flags, default server
    frames = [m for m in messages if isinstance(m, bytes)]
    assert len(frames) == 2 and all(struct.unpack(">II", f[:8]) == (1, 2) for f in frames)
    image = Image.open(io.BytesIO(frames[0][8:]))
    assert image.format == "PNG" and image.size == (24, 16) and image.getpixel((0, 0))[0] == 9
    # re-submitted, it sends again (never served from the cache)
    assert len([m for m in run_with_socket(server, prompt, ask=True) if isinstance(m, bytes)]) == 2


# -- the log viewer ----------------------------------------------------------------------------------


def test_log_viewer_routes_and_following_the_log(server):
    logging.getLogger("latentgraph.test").warning("before anyone follows")
    raw = requests.get(f"{server.url}/internal/logs/raw").json()
    assert raw["size"]["cols"] > 0 and any("before anyone follows" in e["m"] for e in raw["entries"])
    assert "before anyone follows" in requests.get(f"{server.url}/internal/logs").json()
    client_id = uuid.uuid4().hex
    with connect(f"{server.ws_url}?clientId={client_id}") as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"
        assert requests.patch(f"{server.url}/internal/logs/subscribe",
                              json={"enabled": True, "clientId": client_id}).status_code == 200
        logging.getLogger("latentgraph.test").warning("now followed")
        message = json.loads(socket.recv(timeout=10))
        assert message["type"] == "logs" and "now followed" in message["data"]["entries"][0]["m"]
        assert requests.patch(f"{server.url}/internal/logs/subscribe",
                              json={"enabled": False, "clientId": client_id}).status_code == 200
    for body in ({"enabled": "yes", "clientId": "x"}, {"enabled": True}, [1], {"enabled": True, "clientId": 5}):
        assert requests.patch(f"{server.url}/internal/logs/subscribe", json=body).status_code == 400


def test_a_client_falling_behind_loses_previews_but_never_websocket_images():
    hub = Hub()
    behind = Connection("c", None)  # type: ignore[arg-type]  # the socket is not used to queue
    hub.add(behind)
    for _ in range(100):
        behind.outbox.put_nowait("queued")
    hub.send_preview("c", b"legacy", b"meta", only_askers=False)
    assert behind.outbox.qsize() == 100
    hub.send_preview("c", b"legacy", b"meta", only_askers=False, droppable=False)
    assert behind.outbox.qsize() == 101
    behind.feature_flags = {"supports_preview_metadata": True}
    fresh = Connection("c", None)  # type: ignore[arg-type]
    hub.add(fresh)
    hub.send_preview("c", b"legacy", b"meta", only_askers=True)
    assert fresh.outbox.qsize() == 0  # it did not ask
    fresh.feature_flags = {"supports_preview_metadata": True}
    hub.send_preview("c", b"legacy", b"meta", only_askers=True)
    assert fresh.outbox.get_nowait() == b"meta"
