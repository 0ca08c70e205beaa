"""Load: 20 concurrent websocket clients submit 200 prompts and wait for them.

Starts ``python server.py`` with the engine's pure-Python test nodes, then each client
opens a websocket, submits its share of prompts (each one a SlowSteps node reporting
progress, with distinct inputs so nothing is served from the cache) and reads events
until all of its prompts have finished. Meanwhile a poller measures GET /queue.
Checks that every prompt completed exactly once (one ``execution_success`` and one
final ``executing`` per prompt, and a successful history entry) and reports throughput
and the p50/p99 latency of GET /queue while the server is busy.

    PYTHONPATH=. python bench/server_load.py [--clients 20] [--prompts 200] [--steps 20]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import http.client
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def client(session: aiohttp.ClientSession, url: str, index: int, count: int, steps: int,
                 successes: collections.Counter, finals: collections.Counter) -> list[str]:
    client_id = uuid.uuid4().hex
    async with session.ws_connect(f"{url.replace('http', 'ws')}/ws?clientId={client_id}") as socket_:
        mine = []
        for number in range(count):
            prompt = {"1": {"class_type": "SlowSteps", "inputs": {"steps": steps, "value": index * 1000 + number}},
                      "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
            async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client_id}) as response:
                assert response.status == 200, await response.text()
                mine.append((await response.json())["prompt_id"])
        waiting = set(mine)
        async for message in socket_:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            event = message.json()
            data = event["data"]
            if event["type"] == "execution_success":
                successes[data["prompt_id"]] += 1
            elif event["type"] == "executing" and data["node"] is None:
                finals[data["prompt_id"]] += 1
                waiting.discard(data["prompt_id"])
                if not waiting:
                    break
        return mine


def poll_queue(port: int, stop: multiprocessing.synchronize.Event, results: multiprocessing.Queue) -> None:
    """GET /queue in a loop, in its own process so the clients' event handling does not skew it."""
    latencies = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        began = time.perf_counter()
        connection.request("GET", "/queue")
        connection.getresponse().read()
        latencies.append(time.perf_counter() - began)
        time.sleep(0.005)
    results.put(latencies)


async def run(url: str, port: int, clients: int, prompts: int, steps: int) -> None:
    successes: collections.Counter = collections.Counter()
    finals: collections.Counter = collections.Counter()
    stop = multiprocessing.Event()
    queue: multiprocessing.Queue = multiprocessing.Queue()
    per_client = [prompts // clients + (1 if i < prompts % clients else 0) for i in range(clients)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        poller = multiprocessing.Process(target=poll_queue, args=(port, stop, queue))
        poller.start()
        began = time.perf_counter()
        results = await asyncio.gather(*(client(session, url, i, n, steps, successes, finals)
                                         for i, n in enumerate(per_client)))
        elapsed = time.perf_counter() - began
        stop.set()
        latencies = queue.get(timeout=60)
        poller.join(30)
        async with session.get(f"{url}/history") as response:
            history = await response.json()
    ids = [prompt_id for mine in results for prompt_id in mine]
    assert len(ids) == len(set(ids)) == prompts, "prompt ids must be unique"
    once = all(successes[p] == 1 and finals[p] == 1 for p in ids) and len(successes) == len(finals) == prompts
    recorded = all(history.get(p, {}).get("status", {}).get("status_str") == "success" for p in ids)
    print(f"clients {clients}, prompts {prompts}, SlowSteps steps {steps} (a progress event per step)")
    print(f"every prompt completed exactly once: {once}; all in history as success: {recorded}")
    print(f"wall {elapsed:.2f} s, throughput {prompts / elapsed:.1f} prompts/s")
    print(f"GET /queue while busy: p50 {percentile(latencies, 0.5) * 1000:.2f} ms, "
          f"p99 {percentile(latencies, 0.99) * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms "
          f"over {len(latencies)} requests")
    if not (once and recorded):
        raise SystemExit("FAILED: some prompt did not complete exactly once")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="latentgraph-load-"))
    port = free_port()
    command = [sys.executable, str(REPO / "server.py"), "--port", str(port), "--database", str(root / "db.sqlite3"),
               "--input-directory", str(root / "input"), "--output-directory", str(root / "output"),
               "--temp-directory", str(root / "temp"), "--nodes-package", "tests.engine_nodes"]
    process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("server did not start") from None
                time.sleep(0.05)
        asyncio.run(run(url, port, args.clients, args.prompts, args.steps))
    finally:
        process.terminate()
        process.wait(20)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
