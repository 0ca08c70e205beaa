"""Nothing lost: kill -9 the server mid-prompt, restart it on the same database."""

from __future__ import annotations

import signal

import requests

from tests.server_support import (
    free_port,
    start_process,
    submit,
    value_prompt,
    wait_history,
    wait_prompt,
    wait_until,
)


def test_kill_9_and_restart_keeps_queue_and_history(tmp_path):
    port = free_port()
    process = start_process(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    try:
        done = submit(url, value_prompt(7))
        assert wait_history(url, done["prompt_id"])["status"]["status_str"] == "success"
        running = submit(url, wait_prompt(120, tag=1))
        wait_until(lambda: [item[1] for item in requests.get(f"{url}/queue").json()["queue_running"]]
                   == [running["prompt_id"]])
        pending = [submit(url, value_prompt(value)) for value in (31, 32)]
        first = submit(url, value_prompt(30), front=True)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    port = free_port()
    process = start_process(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    try:
        # The prompt that was running is recorded as interrupted...
        interrupted = wait_history(url, running["prompt_id"])
        assert interrupted["status"]["status_str"] == "error" and interrupted["status"]["completed"] is False
        assert [event for event, _ in interrupted["status"]["messages"]] == ["execution_interrupted"]
        # ...the pending ones run, in queue order, exactly once...
        results = {item["prompt_id"]: wait_history(url, item["prompt_id"]) for item in [first, *pending]}
        assert [results[item["prompt_id"]]["outputs"]["2"]["value"] for item in [first, *pending]] == [[30], [31], [32]]
        history = requests.get(f"{url}/history").json()
        order = list(history)
        assert order.index(first["prompt_id"]) < order.index(pending[0]["prompt_id"]) < order.index(
            pending[1]["prompt_id"])
        # ...and the history from before is intact.
        assert history[done["prompt_id"]]["outputs"] == {"2": {"value": [7]}}
        assert requests.get(f"{url}/queue").json() == {"queue_running": [], "queue_pending": []}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
