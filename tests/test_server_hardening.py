"""Hardening: each finding of the outside attack on the server, as a test.

Bounds before work (subgraph bombs, body sizes, extra_data, text, memory estimates), a
worker that survives ``SystemExit``, storage faults (full disk, corrupt database or row),
no secrets in responses, cross-site requests, and no bare 500 for odd input.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import requests

from graph import PromptLimits, PromptTooLarge, build_registry, prepare
from graph.limits import Budget, PreparationCancelled
from graph.ui_format import ui_to_workflow
from tests.server_support import (
    REPO,
    ServerThread,
    free_port,
    make_config,
    value_prompt,
    wait_history,
    wait_until,
)


def ui_node(node_id: int, node_type: str, widgets=()) -> dict:
    return {"id": node_id, "type": node_type, "mode": 0, "inputs": [], "outputs": [],
            "widgets_values": list(widgets)}


def subgraph_bomb(fan_out: int = 10, depth: int = 6) -> dict:
    """A few KB of UI-format JSON whose subgraphs nest ``fan_out`` instances per level:
    ``fan_out ** depth`` instances once expanded."""
    leaf = {"id": "level0", "name": "level0", "nodes": [ui_node(1, "NumberSource", [1]), ui_node(2, "Fail", [])],
            "links": [], "inputs": [], "outputs": [], "widgets": []}
    definitions = [leaf]
    for level in range(1, depth + 1):
        definitions.append({"id": f"level{level}", "name": f"level{level}", "links": [], "inputs": [], "outputs": [],
                            "widgets": [], "nodes": [ui_node(i, f"level{level - 1}") for i in range(1, fan_out + 1)]})
    return {"nodes": [ui_node(1, f"level{depth}")], "links": [], "definitions": {"subgraphs": definitions}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    # cpu: /system_stats then needs no torch import
    config = make_config(root, max_json_body=1024 * 1024, max_extra_data=64 * 1024, max_text_length=1000, cpu=True)
    with ServerThread(config) as running:
        yield running


# -- bounds ---------------------------------------------------------------------------------


def test_subgraph_bomb_is_refused_before_it_expands(server):
    bomb = subgraph_bomb()
    assert len(json.dumps(bomb)) < 8000
    started = time.monotonic()
    response = requests.post(f"{server.url}/prompt", json={"prompt": bomb}, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "prompt_too_large" and "--max-subgraph-instances" in error["message"]
    assert time.monotonic() - started < 10
    assert requests.get(f"{server.url}/prompt", timeout=5).status_code == 200


def test_expanded_node_bound_and_cancel(registry_engine):
    wide = {"nodes": [ui_node(1, "level1")], "links": [], "definitions": {"subgraphs": [
        {"id": "level1", "name": "level1", "links": [], "inputs": [], "outputs": [], "widgets": [],
         "nodes": [ui_node(i, "NumberSource", [1]) for i in range(1, 301)]}]}}
    with pytest.raises(PromptTooLarge, match="more than 200 nodes"):
        prepare(wide, registry_engine, limits=PromptLimits(max_nodes=200))
    assert prepare(wide, registry_engine, limits=PromptLimits(max_nodes=400)).error["type"] == "prompt_no_outputs"
    api = {str(i): {"class_type": "NumberSource", "inputs": {"value": 1}} for i in range(50)}
    with pytest.raises(PromptTooLarge):
        prepare(api, registry_engine, limits=PromptLimits(max_nodes=49))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(PreparationCancelled):
        ui_to_workflow(subgraph_bomb(), registry_engine, Budget(None, cancel))


@pytest.fixture(scope="module")
def registry_engine():
    return build_registry("tests.engine_nodes", None)


def test_json_bodies_and_extra_data_are_bounded(server):
    big = b'{"prompt": {}, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = requests.post(f"{server.url}/prompt", data=big, timeout=30)
    assert response.status_code == 413 and response.json()["error"]["type"] == "body_too_large"
    for path in ("/queue", "/history", "/free", "/interrupt"):
        assert requests.post(f"{server.url}{path}", data=big, timeout=30).status_code == 413
    extra = {"pad": "y" * (100 * 1024)}
    response = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(1), "extra_data": extra}, timeout=10)
    assert response.status_code == 413 and "--max-extra-data" in response.json()["error"]["message"]


def test_long_prompt_text_is_a_node_error(server):
    prompt = {"1": {"class_type": "JoinText", "inputs": {"text": "z" * 5000, "suffix": "b"}},
              "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    response = requests.post(f"{server.url}/prompt", json={"prompt": prompt}, timeout=10)
    assert response.status_code == 400
    error = response.json()["node_errors"]["1"]["errors"][0]
    assert error["type"] == "value_too_long" and error["extra_info"]["input_name"] == "text"
    assert len(json.dumps(error)) < 2000  # the error does not echo the whole text


def test_int_inputs_take_integral_numbers_only(server):
    response = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(64.5)}, timeout=10)
    assert response.status_code == 400
    reply = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(64.0)}, timeout=10)
    assert reply.status_code == 200, reply.text
    shown = wait_history(server.url, reply.json()["prompt_id"])["outputs"]["2"]["value"][0]
    assert shown == 64 and isinstance(shown, int)


def test_memory_estimate_refuses_what_cannot_fit():
    registry = build_registry("nodes", None)
    limits = PromptLimits(memory_bytes=2 * 1024**3)
    huge = {"1": {"class_type": "EmptyImage", "inputs": {"width": 16384, "height": 16384, "batch_size": 1, "color": 0}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    checked = prepare(huge, registry, limits=limits)
    error = checked.node_errors["1"]["errors"][0]
    assert error["type"] == "memory_estimate_too_large" and error["extra_info"]["estimated_bytes"] == 16384**2 * 12
    assert error["extra_info"]["input_name"] in ("width", "height") and "3.0 GiB" in error["message"]
    batch = json.loads(json.dumps(huge))
    batch["1"]["inputs"].update(width=512, height=512, batch_size=4096)
    error = prepare(batch, registry, limits=limits).node_errors["1"]["errors"][0]
    assert error["extra_info"]["input_name"] == "batch_size"
    # The estimate follows links: a small latent decoded by the VAE at 8x is what is too large.
    with open("workflows/txt2img_api.json", encoding="utf-8") as handle:
        txt2img = json.load(handle)
    assert prepare(txt2img, registry, limits=limits).ok
    latent = next(node for node in txt2img.values() if node["class_type"] == "EmptyLatentImage")
    latent["inputs"].update(width=8192, height=8192, batch_size=4)
    checked = prepare(txt2img, registry, limits=limits)
    assert not checked.ok
    blamed = {node_id: errors["class_type"] for node_id, errors in checked.node_errors.items()}
    assert list(blamed.values())[0] in ("VAEDecode", "KSampler")


# -- the worker --------------------------------------------------------------------------------


def test_a_node_calling_sys_exit_fails_only_its_prompt(server):
    reply = requests.post(f"{server.url}/prompt", json={"prompt": {
        "1": {"class_type": "ExitProcess", "inputs": {"code": 3}}}}, timeout=10).json()
    entry = wait_history(server.url, reply["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    error = dict(entry["status"]["messages"])["execution_error"]
    assert "SystemExit" in error["exception_type"]
    reply = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(5)}, timeout=10).json()
    assert wait_history(server.url, reply["prompt_id"])["outputs"]["2"] == {"value": [5]}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's death is the point
def test_a_dead_worker_thread_is_restarted(server):
    worker = server.handlers.worker
    restarts = worker.restarts
    original = worker._apply_free_request

    def die() -> None:
        worker._apply_free_request = original
        raise SystemExit("killed by the test")

    worker._apply_free_request = die  # outside every per-prompt guard: the thread itself ends
    worker.wake()
    wait_until(lambda: worker.restarts == restarts + 1, timeout=15)
    stats = requests.get(f"{server.url}/system_stats", timeout=60).json()
    assert stats["latentgraph"]["worker"]["restarts"] == restarts + 1
    assert stats["latentgraph"]["worker"]["alive"]
    reply = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(6)}, timeout=10).json()
    assert wait_history(server.url, reply["prompt_id"])["outputs"]["2"] == {"value": [6]}


# -- storage faults -------------------------------------------------------------------------------


def test_full_disk_database(server, monkeypatch):
    store = server.handlers.store

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "add", full)
    response = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(1)}, timeout=10)
    assert response.status_code == 503 and response.json()["error"]["type"] == "storage_unavailable"
    monkeypatch.undo()

    # The running prompt's history write fails twice, then the disk has room again.
    failures = []
    finish = store.finish

    def flaky_finish(*args, **kwargs):
        if len(failures) < 2:
            failures.append(args[0])
            raise sqlite3.OperationalError("database or disk is full")
        return finish(*args, **kwargs)

    monkeypatch.setattr(store, "finish", flaky_finish)
    reply = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(7)}, timeout=10).json()
    entry = wait_history(server.url, reply["prompt_id"], timeout=30)
    assert entry["outputs"]["2"] == {"value": [7]} and entry["status"]["status_str"] == "success"
    assert failures == [reply["prompt_id"]] * 2
    assert requests.get(f"{server.url}/queue", timeout=5).json()["queue_running"] == []


def test_corrupt_database_is_moved_aside(tmp_path):
    config = make_config(tmp_path)
    config.database.write_bytes(b"this is not an SQLite database" * 100)
    with ServerThread(config) as running:
        moved = running.handlers.store.moved_aside
        assert moved is not None and moved.read_bytes().startswith(b"this is not an SQLite")
        reply = requests.post(f"{running.url}/prompt", json={"prompt": value_prompt(2)}, timeout=10).json()
        assert wait_history(running.url, reply["prompt_id"])["outputs"]["2"] == {"value": [2]}


def test_a_corrupt_history_row_is_skipped(server):
    good = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(11)}, timeout=10).json()["prompt_id"]
    bad = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(12)}, timeout=10).json()["prompt_id"]
    wait_history(server.url, good)
    wait_history(server.url, bad)
    with sqlite3.connect(server.config.database) as db:
        db.execute("UPDATE prompts SET outputs = '{broken' WHERE prompt_id = ?", (bad,))
    response = requests.get(f"{server.url}/history", timeout=10)
    assert response.status_code == 200 and good in response.json() and bad not in response.json()
    assert requests.get(f"{server.url}/history/{bad}", timeout=10).json() == {}


# -- secrets and cross-site requests ------------------------------------------------------------


def test_system_stats_redacts_the_token(tmp_path, monkeypatch):
    token = "s3cret-token-value"
    monkeypatch.setattr(sys, "argv", ["server.py", "--auth-token", token, "--port", "1", f"--auth-token={token}"])
    with ServerThread(make_config(tmp_path, auth_token=token, cpu=True)) as running:
        headers = {"Authorization": f"Bearer {token}"}
        stats = requests.get(f"{running.url}/system_stats", headers=headers, timeout=60)
        assert stats.status_code == 200 and token not in stats.text
        assert stats.json()["system"]["argv"] == ["server.py", "--auth-token", "***", "--port", "1",
                                                  "--auth-token=***"]
        for path in ("/object_info", "/queue", "/history", "/openapi.json", "/models", "/extensions"):
            assert token not in requests.get(f"{running.url}{path}", headers=headers, timeout=10).text


def test_cross_site_requests_without_origin_are_refused(server):
    body = json.dumps({"prompt": value_prompt(1)})
    cross = {"Sec-Fetch-Site": "cross-site"}
    for content_type in ("text/plain", "multipart/form-data; boundary=x", "application/json"):
        response = requests.post(f"{server.url}/prompt", data=body, timeout=10,
                                 headers={**cross, "Content-Type": content_type})
        assert response.status_code == 403, content_type
    response = requests.post(f"{server.url}/prompt", data=body, headers={"Content-Type": "text/plain"}, timeout=10)
    assert response.status_code == 415 and response.json()["error"]["type"] == "unsupported_media_type"
    assert requests.post(f"{server.url}/userdata/workflows%2Fx.json", data=b"{}", headers=cross,
                         timeout=10).status_code == 403
    # Same-site requests and clients that send no such header still work.
    ok = requests.post(f"{server.url}/prompt", data=body, headers={"Sec-Fetch-Site": "same-origin"}, timeout=10)
    assert ok.status_code == 200
    assert requests.get(f"{server.url}/queue", headers=cross, timeout=10).status_code == 200


def raw_request(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_non_utf8_credentials_are_unauthorized_not_500(tmp_path):
    with ServerThread(make_config(tmp_path, auth_token="tok")) as running:
        for header in (b"Authorization: Bearer \xff\xfe", b"Cookie: latentgraph_token=\xff\xfe"):
            reply = raw_request(running.port, b"GET /queue HTTP/1.1\r\nHost: localhost\r\n" + header +
                                b"\r\nConnection: close\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 401"), reply[:200]


# -- odd input: 4xx, never a bare 500 ---------------------------------------------------------------


def test_huge_integers(server):
    digits = "9" * 5000
    response = requests.post(f"{server.url}/prompt", data='{"prompt": {}, "x": ' + digits + "}", timeout=10)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_json"
    response = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(1), "number": 2**70}, timeout=10)
    assert response.status_code == 400
    # Past float's range (found by the fuzz test: math.isfinite overflowed into a 500).
    response = requests.post(f"{server.url}/prompt", data='{"prompt": {}, "number": 1' + "0" * 400 + "}", timeout=10)
    assert response.status_code == 400
    for name in ("max_items", "offset"):
        response = requests.get(f"{server.url}/history", params={name: str(2**70)}, timeout=10)
        assert response.status_code == 400 and "error" in response.json()


def test_long_names(server):
    long = "a" * 300 + ".png"
    assert requests.get(f"{server.url}/view", params={"filename": long}, timeout=10).status_code == 400
    response = requests.post(f"{server.url}/upload/image", files={"image": (long, b"x", "image/png")}, timeout=10)
    assert response.status_code == 400
    response = requests.post(f"{server.url}/userdata/workflows%2F{long}", data=b"{}", timeout=10)
    assert response.status_code == 400 and "255" in response.json()["error"]["message"]


def test_userdata_move_onto_a_file_parent(server):
    assert requests.post(f"{server.url}/userdata/workflows%2Fsrc.json", data=b"{}", timeout=10).status_code == 200
    assert requests.post(f"{server.url}/userdata/plain", data=b"x", timeout=10).status_code == 200
    response = requests.post(f"{server.url}/userdata/workflows%2Fsrc.json/move/plain%2Finside.json", timeout=10)
    assert response.status_code == 409 and "error" in response.json()


def test_upload_onto_a_full_disk(server, monkeypatch):
    from latentgraph_server import uploads
    from tests.test_server_security import png_bytes

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(uploads, "write_atomically", full)
    response = requests.post(f"{server.url}/upload/image", files={"image": ("a.png", png_bytes(), "image/png")},
                             timeout=10)
    assert response.status_code == 507 and response.json()["error"]["type"] == "insufficient_storage"


def test_unexpected_failures_are_json_without_traceback(server, monkeypatch):
    def broken():
        raise RuntimeError("an internal detail")

    monkeypatch.setattr(server.handlers.store, "queue_json", broken)
    response = requests.get(f"{server.url}/queue", timeout=10)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "internal_error"
    assert "Traceback" not in response.text and "internal detail" not in response.text


def test_plugins_that_exit_or_hang_at_import_are_skipped(tmp_path):
    plugins = tmp_path / "custom_nodes"
    plugins.mkdir()
    (plugins / "exits.py").write_text("import sys\nsys.exit(4)\n")
    (plugins / "hangs.py").write_text("import time\ntime.sleep(60)\n")
    config = make_config(tmp_path, custom_nodes_directory=plugins, plugin_import_timeout=1.0, cpu=True)
    started = time.monotonic()
    with ServerThread(config) as running:
        assert time.monotonic() - started < 20
        failures = {failure.name: failure.message for failure in running.handlers.registry.plugin_failures}
        assert "SystemExit" in failures["exits"] and "longer than 1 s" in failures["hangs"]
        assert requests.get(f"{running.url}/prompt", timeout=5).status_code == 200
        shown = requests.get(f"{running.url}/system_stats", timeout=60).json()["latentgraph"]["plugin_failures"]
        assert {entry["name"] for entry in shown} == {"exits", "hangs"}


def make_run_server_arguments() -> list[str]:
    """The arguments ``make run`` gives server.py, read from the Makefile."""
    recipe = (REPO / "Makefile").read_text()
    line = next(line for line in recipe.splitlines() if "server.py" in line and line.startswith("\t"))
    return shlex.split(line.split("server.py", 1)[1])


def test_editor_save_with_the_make_run_command_line(tmp_path):
    """``make run`` starts the server with relative folders (user/, output/...): saving and
    moving a workflow in the library must work there, not only with absolute folders.
    Folders now default to the installation, so a relative ``--base-directory .`` (this
    test's folder) stands for them and keeps the test's files out of the checkout."""
    arguments = [*make_run_server_arguments(), "--base-directory", "."]
    port = free_port()
    arguments[arguments.index("--port") + 1] = str(port)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen([sys.executable, str(REPO / "server.py"), *arguments], cwd=tmp_path, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is not None or _answers(url), timeout=60)
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        saved = requests.post(f"{url}/userdata/workflows%2Fa.json", data=b'{"nodes": []}', timeout=10)
        assert saved.status_code == 200, saved.text
        assert saved.json() == "workflows/a.json"
        assert (tmp_path / "user" / "default" / "workflows" / "a.json").read_bytes() == b'{"nodes": []}'
        moved = requests.post(f"{url}/userdata/workflows%2Fa.json/move/workflows%2Fb.json", timeout=10)
        assert moved.status_code == 200 and moved.json() == "workflows/b.json"
        listing = requests.get(f"{url}/userdata", params={"dir": "workflows"}, timeout=10).json()
        assert listing == ["b.json"]
    finally:
        process.terminate()
        process.wait(20)
        log.close()
    assert not re.search(r"Traceback", (tmp_path / "server.log").read_text())


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/prompt", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False
