"""Scale-out on Ray (server.py --ray) against a local Ray instance shared by this module.

Ray's start-up is slow here (tens of seconds on the loaded 2-core box), so one instance
serves every test, one Ray server with two workers serves most of them, and the nodes sleep
rather than compute. The local worker runs the same prompts where the two must agree.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.sync.client import connect

from tests import test_server_api as server_api_tests
from tests import test_server_hardening as server_hardening_tests
from tests.server_support import REPO, ServerThread, make_config, submit, wait_history, wait_until
from tests.test_server_api import finished, receive_until

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # starts a local Ray instance and its worker processes

PACKAGES = ["tests.engine_nodes", "tests.server_nodes", "tests.ray_nodes"]
WORKERS = 2


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    # Workers import the test node packages from the repository, as the front server does, and
    # keep their scratch folders where pytest cleans up.
    scratch = tmp_path_factory.mktemp("scratch")
    ray.init(num_cpus=WORKERS + 2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "LATENTGRAPH_WORKER_SCRATCH": str(scratch)}})
    yield
    ray.shutdown()


def ray_config(root: Path, **overrides: Any):
    settings = {"cpu": True, "node_packages": PACKAGES, "ray_address": "auto", "ray_workers": WORKERS,
                "ray_worker_cpus": 1.0, **overrides}
    return make_config(root, **settings)


def wait_workers(server: ServerThread, count: int = WORKERS, timeout: float = 120.0) -> list[dict[str, Any]]:
    def ready() -> bool:
        workers = server.handlers.worker.health()["workers"]
        return sum(w["state"] == "idle" for w in workers) >= count
    wait_until(ready, timeout)
    return server.handlers.worker.health()["workers"]


@pytest.fixture(scope="module")
def ray_server(ray_instance, tmp_path_factory):
    with ServerThread(ray_config(tmp_path_factory.mktemp("ray"))) as running:
        wait_workers(running)
        yield running


@pytest.fixture(scope="module")
def local_server(tmp_path_factory):
    with ServerThread(make_config(tmp_path_factory.mktemp("local"), cpu=True, node_packages=PACKAGES)) as running:
        yield running


@pytest.fixture(scope="module")
def ray_server_one(ray_instance, tmp_path_factory):
    """One Ray worker: the local worker's own API tests run unchanged against it."""
    with ServerThread(ray_config(tmp_path_factory.mktemp("ray1"), ray_workers=1)) as running:
        wait_workers(running, 1)
        yield running


# tests/test_server_api.py's tests that run prompts, run here against a Ray server as they are
# (the others touch no worker); with one worker, as they count on one prompt running at a time.
API_TESTS = ["test_prompt_runs_and_events_reach_the_submitting_client", "test_queue_remaining_counts_running_prompt",
             "test_queue_delete_clear_front_and_interrupt_by_id", "test_front_runs_before_earlier_prompts",
             "test_node_failure_reports_execution_error", "test_ui_format_prompt_is_converted_and_kept_in_extra_data",
             "test_saved_image_is_viewable_and_previews_arrive_as_binary", "test_history_paging_and_deletion",
             "test_partial_execution_targets"]


@pytest.mark.parametrize("name", API_TESTS)
def test_the_local_worker_s_api_tests_pass_on_ray(ray_server_one, name):
    getattr(server_api_tests, name)(ray_server_one)


def test_the_hardening_tests_of_the_worker_pass_on_ray(ray_server_one, monkeypatch):
    """tests/test_server_hardening.py, as it is: a node calling sys.exit fails only its prompt
    (on the worker), and a history write that fails (a full disk) is retried until it succeeds."""
    server_hardening_tests.test_a_node_calling_sys_exit_fails_only_its_prompt(ray_server_one)
    server_hardening_tests.test_full_disk_database(ray_server_one, monkeypatch)


def model_prompt(name: str, seconds: float = 0.1, size: int = 1000) -> dict[str, Any]:
    return {"1": {"class_type": "FakeCheckpoint", "inputs": {"ckpt_name": name, "load_seconds": 0.2, "size": size}},
            "2": {"class_type": "UseModel", "inputs": {"model": ["1", 0], "seconds": seconds}}}


def placed(server: ServerThread, prompt_id: str) -> list[str]:
    return list(server.handlers.worker.placements.get(prompt_id, []))


def trace(server: ServerThread, prompt: dict[str, Any]) -> list[Any]:
    """A prompt's websocket messages as a client that asked for previews gets them, without
    what differs between runs (ids, times, queue status broadcasts)."""
    client_id = uuid.uuid4().hex
    with connect(f"{server.ws_url}?clientId={client_id}") as socket:
        socket.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        reply = submit(server.url, prompt, client_id=client_id)
        messages = receive_until(socket, finished(reply["prompt_id"]))
    prompt_id = reply["prompt_id"]
    shown = []
    for message in messages:
        if isinstance(message, bytes):
            shown.append(("binary", message[:4], message.replace(prompt_id.encode(), b"P")[8:200]))
            continue
        if message["type"] in ("status", "feature_flags"):
            continue
        text = json.dumps(message["data"], sort_keys=True).replace(prompt_id, "P")
        data = json.loads(text)
        data.pop("timestamp", None)
        data.pop("traceback", None)  # the same code either way, but the frames above it differ
        shown.append((message["type"], data))
    return shown


def test_event_sequence_is_the_local_workers(ray_server, local_server):
    prompts = [
        {"1": {"class_type": "SlowSteps", "inputs": {"steps": 3, "value": 1}},
         "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
         "3": {"class_type": "SaveTestImage", "inputs": {"red": 9, "filename_prefix": "events"}},
         "4": {"class_type": "PreviewSteps", "inputs": {"steps": 2}}},
        {"1": {"class_type": "Fail", "inputs": {"value": 7}},
         "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}},
    ]
    first = None
    for prompt in prompts:
        expected = trace(local_server, prompt)
        if first is None:
            first = expected
            assert sum(kind == "binary" for kind, *_ in first) == 2  # PreviewSteps' previews
            assert [kind for kind, *_ in first][-2:] == ["execution_success", "executing"]
        got = trace(ray_server, prompt)
        assert got == expected
    kinds = [kind for kind, *_ in expected]
    assert kinds[-2:] == ["execution_error", "executing"]  # the second prompt fails, as it should
    image = wait_history(ray_server.url, list(requests.get(f"{ray_server.url}/history", params={"max_items": 2})
                                              .json())[0])["outputs"]["3"]["images"][0]
    view = requests.get(f"{ray_server.url}/view", params={"filename": image["filename"], "type": "output"})
    assert view.status_code == 200 and view.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_prompts_spread_over_workers_and_run_exactly_once(ray_server):
    started = time.monotonic()
    ids = [submit(ray_server.url, {"1": {"class_type": "Wait", "inputs": {"seconds": 1.0, "tag": 100 + i}}})
           ["prompt_id"] for i in range(6)]
    entries = [wait_history(ray_server.url, prompt_id, 60) for prompt_id in ids]
    elapsed = time.monotonic() - started
    assert [e["outputs"]["1"]["value"] for e in entries] == [[100 + i] for i in range(6)]
    assert all(len(placed(ray_server, prompt_id)) == 1 for prompt_id in ids)  # each ran once
    assert {placed(ray_server, prompt_id)[0] for prompt_id in ids} == {"w0", "w1"}
    assert elapsed < 6.0  # one worker alone needs 6 s of waiting
    stats = requests.get(f"{ray_server.url}/system_stats").json()["latentgraph"]["worker"]
    assert stats["mode"] == "ray" and len(stats["workers"]) == WORKERS
    assert all(w["device"] == "cpu" and w["state"] == "idle" for w in stats["workers"])


def test_routing_follows_loaded_models_and_never_waits_for_a_busy_worker(ray_server):
    a, b = f"a-{uuid.uuid4().hex[:6]}.safetensors", f"b-{uuid.uuid4().hex[:6]}.safetensors"
    big = 10**9  # more cached than anything else here: B goes to the other worker (least to evict)
    first_a = submit(ray_server.url, model_prompt(a, size=big))["prompt_id"]
    wait_history(ray_server.url, first_a, 30)
    first_b = submit(ray_server.url, model_prompt(b, size=big))["prompt_id"]
    wait_history(ray_server.url, first_b, 30)
    holder_a, holder_b = placed(ray_server, first_a)[0], placed(ray_server, first_b)[0]
    assert holder_a != holder_b
    wait_until(lambda: any(f"FakeCheckpoint({a})" in w["loaded_models"]
                           for w in ray_server.handlers.worker.health()["workers"] if w["name"] == holder_a))
    for name, holder in ((b, holder_b), (a, holder_a), (b, holder_b)):
        again = submit(ray_server.url, model_prompt(name, size=big))["prompt_id"]
        entry = wait_history(ray_server.url, again, 30)
        assert placed(ray_server, again) == [holder]
        cached = [data["nodes"] for event, data in entry["status"]["messages"] if event == "execution_cached"]
        assert cached and "1" in cached[0]  # the model was not loaded again
    # A holds the worker busy; a second prompt for A goes to the idle worker rather than wait.
    long_a = submit(ray_server.url, model_prompt(a, seconds=3, size=big))["prompt_id"]
    wait_until(lambda: ray_server.handlers.worker.current() is not None)
    quick_a = submit(ray_server.url, model_prompt(a, size=big))["prompt_id"]
    wait_history(ray_server.url, quick_a, 30)
    assert placed(ray_server, long_a) == [holder_a] and placed(ray_server, quick_a) == [holder_b]
    assert not requests.get(f"{ray_server.url}/history/{long_a}").json()  # still running meanwhile
    wait_history(ray_server.url, long_a, 30)
    # POST /free reaches every worker: their models are unloaded (seen at their next ping).
    requests.post(f"{ray_server.url}/free", json={"unload_models": True})
    wait_until(lambda: not any(w["loaded_models"] for w in ray_server.handlers.worker.health()["workers"]), 20)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread dies on purpose
def test_the_watchdog_restarts_a_dead_dispatcher_thread(ray_server):
    dispatcher = ray_server.handlers.worker
    original, calls = dispatcher._dispatch, []

    def dying() -> None:
        if not calls:
            calls.append(1)
            raise SystemExit("simulated")  # not an Exception: the thread's own guard lets it through
        original()

    dispatcher._dispatch = dying
    try:
        wait_until(lambda: dispatcher.restarts >= 1, 20)
    finally:
        del dispatcher._dispatch
    assert dispatcher.health()["last_failure"] == "the dispatcher thread died"
    assert requests.get(f"{ray_server.url}/system_stats").json()["latentgraph"]["worker"]["restarts"] >= 1
    entry = wait_history(ray_server.url, submit(ray_server.url, {"1": {"class_type": "Wait", "inputs": {
        "seconds": 0, "tag": 4}}})["prompt_id"], 30)
    assert entry["status"]["status_str"] == "success"


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_uploads_reach_the_worker_and_interrupt_reaches_its_prompt(ray_server):
    import hashlib

    for colour in ((1, 2, 3), (200, 100, 0)):  # the second upload replaces the first under the same name
        data = png_bytes(colour)
        reply = requests.post(f"{ray_server.url}/upload/image", files={"image": ("shipped.png", data, "image/png")},
                              data={"overwrite": "true"})
        assert reply.status_code == 200, reply.text
        prompt = {"1": {"class_type": "InputFileDigest", "inputs": {"name": "shipped.png"}}}
        entry = wait_history(ray_server.url, submit(ray_server.url, prompt)["prompt_id"], 30)
        stored = (ray_server.config.input_directory / "shipped.png").read_bytes()  # as the front stored it
        assert entry["outputs"]["1"]["sha256"] == [hashlib.sha256(stored).hexdigest()]
        assert entry["outputs"]["1"]["size"] == [len(stored)]
    blockers = [submit(ray_server.url, {"1": {"class_type": "Wait", "inputs": {"seconds": 60, "tag": 7 + i}}})
                ["prompt_id"] for i in range(WORKERS)]
    pending = submit(ray_server.url, {"1": {"class_type": "Wait", "inputs": {"seconds": 60, "tag": 9}}})["prompt_id"]
    wait_until(lambda: len(requests.get(f"{ray_server.url}/queue").json()["queue_running"]) == WORKERS)
    requests.post(f"{ray_server.url}/queue", json={"delete": [pending]})
    for prompt_id in blockers:
        requests.post(f"{ray_server.url}/interrupt", json={"prompt_id": prompt_id})
        entry = wait_history(ray_server.url, prompt_id, 20)
        assert any(event == "execution_interrupted" for event, _ in entry["status"]["messages"])
    assert not requests.get(f"{ray_server.url}/history/{pending}").json() and pending not in ray_server.handlers.worker.placements


def test_an_interrupt_by_id_reaches_only_its_worker_and_one_without_id_every_worker(ray_server):
    """ComfyUI's POST /interrupt: with a prompt_id, only that prompt; without one (or an empty
    one, as ComfyUI's `if prompt_id:`), a global interrupt: here every running prompt."""
    dispatcher = ray_server.handlers.worker
    ids = [submit(ray_server.url, {"1": {"class_type": "Wait", "inputs": {"seconds": 60, "tag": 30 + i}}})
           ["prompt_id"] for i in range(WORKERS)]
    wait_until(lambda: {w["prompt"] for w in dispatcher.health()["workers"] if w["node"]} == set(ids), 30)
    runs_on = {w["prompt"]: w["name"] for w in dispatcher.health()["workers"]}
    assert len(set(runs_on.values())) == WORKERS
    requests.post(f"{ray_server.url}/interrupt", json={"prompt_id": ids[0]})
    entry = wait_history(ray_server.url, ids[0], 20)
    assert any(event == "execution_interrupted" for event, _ in entry["status"]["messages"])
    time.sleep(1.0)  # an interrupt that also reached the other worker would have ended its prompt by now
    assert not requests.get(f"{ray_server.url}/history/{ids[1]}").json()
    assert {w["name"]: w["prompt"] for w in dispatcher.health()["workers"]}[runs_on[ids[1]]] == ids[1]
    for prompt_id in ids[1:]:
        assert not dispatcher.interrupt(prompt_id + "x")  # an id that is not running reaches no worker
    requests.post(f"{ray_server.url}/interrupt", json={"prompt_id": ""})
    for prompt_id in ids[1:]:
        entry = wait_history(ray_server.url, prompt_id, 20)
        assert any(event == "execution_interrupted" for event, _ in entry["status"]["messages"])


def test_a_reconnecting_client_learns_where_each_of_its_prompts_runs(ray_server):
    client_id = uuid.uuid4().hex
    ids = {submit(ray_server.url, {"1": {"class_type": "Wait", "inputs": {"seconds": 60, "tag": 20 + i}}},
                  client_id=client_id)["prompt_id"] for i in range(WORKERS)}
    wait_until(lambda: sum(bool(w["node"]) for w in ray_server.handlers.worker.health()["workers"]) == WORKERS)
    try:
        with connect(f"{ray_server.ws_url}?clientId={client_id}") as socket:
            messages = [json.loads(socket.recv(timeout=10)) for _ in range(1 + WORKERS)]
        assert messages[0]["type"] == "status"
        assert {m["data"]["prompt_id"] for m in messages[1:] if m["type"] == "executing"} == ids
    finally:
        for prompt_id in ids:
            requests.post(f"{ray_server.url}/interrupt", json={"prompt_id": prompt_id})
        for prompt_id in ids:
            wait_history(ray_server.url, prompt_id, 20)


def kill_worker_running(server: ServerThread, prompt_id: str) -> str:
    """Kills (SIGKILL) the worker process running ``prompt_id`` once a node of it runs there;
    returns the worker's name."""
    def running() -> dict[str, Any] | None:
        return next((w for w in server.handlers.worker.health()["workers"]
                     if w["prompt"] == prompt_id and w["node"] is not None), None)
    wait_until(lambda: running() is not None, 30)
    worker = running()
    os.kill(worker["pid"], signal.SIGKILL)
    return worker["name"]


def test_a_killed_worker_s_prompt_completes_once_elsewhere(ray_server):
    dispatcher = ray_server.handlers.worker
    prefix = f"kill{uuid.uuid4().hex[:6]}"
    prompt = {"1": {"class_type": "SaveTestImage", "inputs": {"red": 5, "filename_prefix": prefix}},
              "2": {"class_type": "Wait", "inputs": {"seconds": 4.0, "tag": 1}}}
    other = submit(ray_server.url, {"1": {"class_type": "Wait", "inputs": {"seconds": 1.0, "tag": 2}}})["prompt_id"]
    client_id = uuid.uuid4().hex
    with connect(f"{ray_server.ws_url}?clientId={client_id}") as socket:
        prompt_id = submit(ray_server.url, prompt, client_id=client_id)["prompt_id"]
        output = ray_server.config.output_directory
        wait_until(lambda: any(output.glob(f"{prefix}_*")), 30)  # its first output already came back
        killed = kill_worker_running(ray_server, prompt_id)
        messages = receive_until(socket, finished(prompt_id))
    entry = wait_history(ray_server.url, prompt_id, 90)
    assert entry["status"]["status_str"] == "success", entry["status"]
    runs = placed(ray_server, prompt_id)
    assert len(runs) == 2 and runs[0] == killed and runs[1] != killed
    assert len(list(output.glob(f"{prefix}_*"))) == 1  # one set of outputs
    # What the client saw: the lost run's events, then the new run's from a fresh execution_start,
    # without a second `executed` for the image it already had, which is the file that stayed.
    seen = [(m["type"], m["data"].get("node")) for m in messages if isinstance(m, dict)
            and m["type"] not in ("status", "progress_state") and m["data"].get("prompt_id") == prompt_id]
    starts = [i for i, (kind, _) in enumerate(seen) if kind == "execution_start"]
    shown = [(i, node) for i, (kind, node) in enumerate(seen) if kind == "executed"]
    assert len(starts) == 2 and [node for _, node in shown] == ["1", "2"]
    assert starts[0] < shown[0][0] < starts[1] < shown[1][0]
    assert seen[-2:] == [("execution_success", None), ("executing", None)]
    image = next(m for m in messages if isinstance(m, dict) and m["type"] == "executed"
                 and m["data"]["prompt_id"] == prompt_id)["data"]["output"]
    assert entry["outputs"]["1"] == image and (output / image["images"][0]["filename"]).is_file()
    assert wait_history(ray_server.url, other, 30)["status"]["status_str"] == "success"
    assert "was lost running prompt" in dispatcher.health()["last_failure"]
    workers = wait_workers(ray_server)  # a replacement took the lost worker's place
    assert killed not in {w["name"] for w in workers} and len(workers) == WORKERS
    # After --ray-max-tries lost runs, the prompt is recorded as failed with the reason.
    dispatcher.config.ray_max_tries = 1
    try:
        doomed = submit(ray_server.url, {"1": {"class_type": "Wait", "inputs": {"seconds": 30, "tag": 3}}})["prompt_id"]
        kill_worker_running(ray_server, doomed)
        failed = wait_history(ray_server.url, doomed, 60)
    finally:
        dispatcher.config.ray_max_tries = 3
    assert failed["status"]["status_str"] == "error"
    error = dict(failed["status"]["messages"])["execution_error"]
    assert error["exception_type"] == "WorkerLost" and "lost 1 times" in error["exception_message"]
    wait_workers(ray_server)


def test_a_hung_worker_is_killed_and_its_prompt_completes_elsewhere(ray_server):
    dispatcher = ray_server.handlers.worker
    prompt_id = submit(ray_server.url, {"1": {"class_type": "Wait", "inputs": {"seconds": 2.0, "tag": 5}}})["prompt_id"]
    hung_before = dispatcher.hung_workers
    dispatcher.config.ray_ping_timeout = 3.0
    stopped = None
    try:
        wait_until(lambda: any(w["prompt"] == prompt_id and w["node"] for w in dispatcher.health()["workers"]), 30)
        worker = next(w for w in dispatcher.health()["workers"] if w["prompt"] == prompt_id)
        stopped = worker["pid"]
        os.kill(stopped, signal.SIGSTOP)  # alive but answering nothing, as a hung worker
        entry = wait_history(ray_server.url, prompt_id, 90)
    finally:
        dispatcher.config.ray_ping_timeout = 60.0
        if stopped is not None:
            try:
                os.kill(stopped, signal.SIGCONT)
            except ProcessLookupError:
                pass  # killed, as it should be
    assert entry["status"]["status_str"] == "success"
    runs = placed(ray_server, prompt_id)
    assert len(runs) == 2 and runs[0] == worker["name"] != runs[1]
    assert dispatcher.health()["hung_workers"] == hung_before + 1
    wait_until(lambda: not os.path.exists(f"/proc/{stopped}") or "Z" in Path(f"/proc/{stopped}/stat").read_text()
               .split()[2], 30)  # the hung process itself was killed
    wait_workers(ray_server)


def test_without_ray_flag_ray_is_never_imported(tmp_path):
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tests.server_support import ServerThread, make_config, submit, wait_history\n"
        "with ServerThread(make_config(Path(sys.argv[1]))) as s:\n"
        "    wait_history(s.url, submit(s.url, {'1': {'class_type': 'Wait', 'inputs': {'seconds': 0, 'tag': 1}}})['prompt_id'])\n"
        "print('ray' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_server_py_with_ray_local_runs_prompts_and_stops_cleanly(tmp_path, monkeypatch):
    """The real command line: `server.py --ray local` starts its own Ray instance and workers,
    runs a prompt, and on SIGTERM shuts down (exit 0) and stops that instance."""
    from tests.server_support import free_port, start_process

    monkeypatch.setenv("LATENTGRAPH_WORKER_SCRATCH", str(tmp_path / "scratch"))  # reaches the workers
    port = free_port()
    process = start_process(tmp_path, port, "--cpu", "--ray", "local", "--ray-workers", "1",
                            "--nodes-package", "tests.ray_nodes")
    try:
        url = f"http://127.0.0.1:{port}"
        prompt = {"1": {"class_type": "SaveTestImage", "inputs": {"red": 1, "filename_prefix": "cli"}}}
        entry = wait_history(url, submit(url, prompt)["prompt_id"], 120)
        assert entry["outputs"]["1"]["images"][0]["filename"] == "cli_00001_.png"
        assert (tmp_path / "output" / "cli_00001_.png").is_file()
        assert list((tmp_path / "scratch").glob("latentgraph-worker-w0-*/output/cli_00001_.png"))  # its own copy
        stats = requests.get(f"{url}/system_stats", timeout=10).json()["latentgraph"]["worker"]
        assert stats["mode"] == "ray" and stats["ray_address"] == "local" and len(stats["workers"]) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    log = next(tmp_path.glob("server-*.log")).read_text()
    assert code == 0, log[-2000:]
    assert "stopped the Ray workers and disconnected from Ray" in log
