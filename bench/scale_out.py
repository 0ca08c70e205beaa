"""Scale-out on Ray (issue 15): throughput over 1, 2, 4 workers, overhead per prompt, model affinity.

One local Ray instance; front servers run in this process (``tests.server_support.ServerThread``)
with the test nodes, whose work is sleeping, so the 2-core box is not what limits throughput.

1. Throughput: ``--per-worker`` prompts per worker, each a Wait node of ``--sleep`` seconds with
   distinct inputs (nothing cached), all queued at once; prompts/s against one worker's.
2. Overhead: a prompt that does nothing (Wait 0 s), one at a time, from submission to the
   final ``executing`` event on the websocket: Ray with one worker against the local worker.
3. Affinity: 3 checkpoints (FakeCheckpoint, ``--load`` s to load) over 2 workers that can each
   hold one (``--model-cache-budget``), a seeded random mix; a hit is a prompt whose loader was
   served from its worker's cache (``execution_cached``). Affinity routing against random
   routing, with prompts sent one at a time (workers idle, so routing has a choice) and all at
   once (a full queue: each freed worker takes the next prompt, whatever it holds).

    PYTHONPATH=. python bench/scale_out.py [--sleep 0.5] [--per-worker 8] [--overhead 30] [--mix 36]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import ray  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from tests.server_support import ServerThread, make_config, submit, wait_history, wait_until  # noqa: E402

PACKAGES = ["tests.engine_nodes", "tests.server_nodes", "tests.ray_nodes"]


def server(root: Path, workers: int | None, **overrides: Any) -> ServerThread:
    extra = {"ray_address": "auto", "ray_workers": workers, "ray_worker_cpus": 1.0} if workers else {}
    return ServerThread(make_config(root, cpu=True, node_packages=PACKAGES, **extra, **overrides))


def wait_ready(running: ServerThread, workers: int) -> None:
    wait_until(lambda: sum(w["state"] == "idle" for w in running.handlers.worker.health()["workers"]) >= workers, 300)


def throughput(root: Path, workers: int | None, count: int, sleep: float) -> float:
    with server(root / f"tp{workers}", workers) as running:
        if workers:
            wait_ready(running, workers)
        warm_up = [submit(running.url, {"1": {"class_type": "Wait", "inputs": {"seconds": 0.1, "tag": -1 - i}}})
                   ["prompt_id"] for i in range(workers or 1)]  # each worker's first prompt sets it up
        for prompt_id in warm_up:
            wait_history(running.url, prompt_id, 600)
        started = time.perf_counter()
        ids = [submit(running.url, {"1": {"class_type": "Wait", "inputs": {"seconds": sleep, "tag": i}}})["prompt_id"]
               for i in range(count)]
        for prompt_id in ids:
            assert wait_history(running.url, prompt_id, 600)["status"]["status_str"] == "success"
        return count / (time.perf_counter() - started)


def round_trips(running: ServerThread, count: int) -> list[float]:
    """Milliseconds from POST /prompt to the final ``executing`` (node null), one prompt at a time."""
    client_id = uuid.uuid4().hex
    times = []
    with connect(f"{running.ws_url}?clientId={client_id}") as socket:
        for index in range(count + 3):
            started = time.perf_counter()
            prompt_id = submit(running.url, {"1": {"class_type": "Wait", "inputs": {"seconds": 0, "tag": 10_000 + index}}},
                               client_id=client_id)["prompt_id"]
            while True:
                message = socket.recv(timeout=60)
                if isinstance(message, str):
                    data = json.loads(message)
                    if data["type"] == "executing" and data["data"]["node"] is None \
                            and data["data"]["prompt_id"] == prompt_id:
                        break
            if index >= 3:  # the first few warm up (plans, connections)
                times.append((time.perf_counter() - started) * 1000)
    return times


def affinity(root: Path, routing: str, names: list[str], load: float, budget: int, at_once: bool) -> dict[str, Any]:
    with server(root / f"aff-{routing}-{at_once}", 2, ray_routing=routing, model_cache_budget=budget) as running:
        wait_ready(running, 2)
        running.handlers.worker._rng.seed(1)
        started = time.perf_counter()

        def prompt(name: str) -> dict[str, Any]:
            return {"1": {"class_type": "FakeCheckpoint", "inputs": {"ckpt_name": name, "load_seconds": load,
                                                                     "size": 1000}},
                    "2": {"class_type": "UseModel", "inputs": {"model": ["1", 0], "seconds": 0.1}}}
        if at_once:
            ids = [submit(running.url, prompt(name))["prompt_id"] for name in names]
            entries = [wait_history(running.url, prompt_id, 600) for prompt_id in ids]
        else:
            entries = [wait_history(running.url, submit(running.url, prompt(name))["prompt_id"], 600) for name in names]
        elapsed = time.perf_counter() - started
    hits = sum(any(event == "execution_cached" and "1" in data["nodes"] for event, data in e["status"]["messages"])
               for e in entries)
    return {"hits": hits, "total": len(entries), "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sleep", type=float, default=0.5)
    parser.add_argument("--per-worker", type=int, default=8)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--overhead", type=int, default=30)
    parser.add_argument("--mix", type=int, default=36)
    parser.add_argument("--load", type=float, default=0.5)
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    ray.init(num_cpus=max(counts) + 2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    root = Path(tempfile.mkdtemp(prefix="scale-out-"))

    print(f"## throughput: {args.per_worker} prompts per worker, each sleeping {args.sleep} s")
    local = throughput(root, None, args.per_worker, args.sleep)
    print(f"  local worker: {local:.2f} prompts/s", flush=True)
    rates = {}
    for workers in counts:
        rates[workers] = throughput(root, workers, args.per_worker * workers, args.sleep)
        print(f"  {workers} worker(s): {rates[workers]:.2f} prompts/s = {rates[workers] / rates[counts[0]]:.2f}x "
              f"one worker's (ideal {workers}x; {1 / args.sleep * workers:.2f} prompts/s with no overhead)", flush=True)

    print(f"## overhead: {args.overhead} empty prompts one at a time, submission to final event")
    results = {}
    for label, workers in (("local worker", None), ("Ray, 1 worker", 1)):
        with server(root / f"oh-{workers}", workers) as running:
            if workers:
                wait_ready(running, workers)
            times = round_trips(running, args.overhead)
        results[label] = times
        print(f"  {label}: median {statistics.median(times):.1f} ms, p90 "
              f"{sorted(times)[int(0.9 * (len(times) - 1))]:.1f} ms", flush=True)
    print(f"  overhead of Ray: {statistics.median(results['Ray, 1 worker']) - statistics.median(results['local worker']):.1f}"
          " ms per prompt (median)")

    draw = random.Random(7)
    mix = [draw.choice(["a.safetensors", "b.safetensors", "c.safetensors"]) for _ in range(args.mix)]
    print(f"## affinity: {args.mix} prompts over 3 checkpoints, 2 workers holding one model each, load {args.load} s")
    for at_once in (False, True):
        for routing in ("affinity", "random"):
            result = affinity(root, routing, mix, args.load, 1500, at_once)
            print(f"  {'all at once' if at_once else 'one at a time'}, {routing}: {result['hits']}/{result['total']} "
                  f"hits ({result['hits'] / result['total']:.0%}), {result['seconds']:.1f} s", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
