"""The server's event loop while one client sends something large: its longest stall.

While the loop is blocked, no other client is answered, so the longest gap between the
wake-ups of a 1 ms ticker running on the server's loop is what every other client waits
at worst. Two loads, each sent by one client while the ticker runs:

  - a 10 MB JSON body (``extra_data`` padded), as POST /prompt;
  - an API-format prompt of 100,000 nodes, as POST /prompt.

The baseline is the same server code at another commit (``--baseline REV``, default the
last commit before the hardening work), checked out into a temporary git worktree and
measured in the same run, each code in its own process. The current code is measured
twice for the 100k-node prompt: with its default limits (the prompt is refused before
it is prepared) and with ``--max-prompt-nodes`` raised so it is prepared as before.

    python bench/event_loop_stall.py [--baseline 750cc92] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "750cc92"  # main before the hardening issue


def measure(loads: list[str], overrides: dict, repeat: int) -> dict[str, float]:
    """Runs in the measured code's process: the longest stall (ms) per load, best of ``repeat``."""
    import requests
    from aiohttp import web

    from server import create_app
    from tests.server_support import free_port, make_config

    root = Path(tempfile.mkdtemp(prefix="stall-"))
    config = make_config(root, node_packages=["tests.engine_nodes"], **overrides)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bodies = {
        "10MB body": json.dumps({"prompt": {"1": {"class_type": "NumberSource", "inputs": {"value": 1}},
                                            "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}},
                                 "extra_data": {"pad": "x" * 10_000_000}}).encode(),
        "100k-node prompt": json.dumps({"prompt": {
            **{str(i): {"class_type": "NumberSource", "inputs": {"value": i % 1000}} for i in range(99_999)},
            "out": {"class_type": "ShowValue", "inputs": {"value": ["0", 0]}}}}).encode(),
    }
    results: dict[str, float] = {}

    async def main() -> None:
        runner = web.AppRunner(create_app(config))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        loop = asyncio.get_running_loop()
        for load in loads:
            best = float("inf")
            for _ in range(repeat):
                done = threading.Event()
                status: list[int] = []

                def send(body: bytes = bodies[load], status: list[int] = status,
                         done: threading.Event = done) -> None:
                    status.append(requests.post(f"{url}/prompt", data=body, timeout=600).status_code)
                    done.set()

                worst = 0.0
                last = loop.time()
                thread = threading.Thread(target=send)
                thread.start()
                while not done.is_set():
                    await asyncio.sleep(0.001)
                    now = loop.time()
                    worst = max(worst, now - last)
                    last = now
                thread.join()
                best = min(best, worst * 1000)
                await asyncio.sleep(0.2)  # let the worker finish before the next try
            results[f"{load} (HTTP {status[0]})"] = best
        await runner.cleanup()

    asyncio.run(main())
    return results


def run_child(checkout: Path, loads: list[str], overrides: dict, repeat: int) -> dict[str, float]:
    """``measure`` in a process that imports the server from ``checkout``."""
    command = [sys.executable, __file__, "--child", json.dumps([loads, overrides, repeat])]
    output = subprocess.run(command, cwd=checkout, capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"})
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(Path.cwd()))
        print(json.dumps(measure(*json.loads(args.child))))
        return
    loads = ["10MB body", "100k-node prompt"]
    worktree = Path(tempfile.mkdtemp(prefix="stall-baseline-")) / "checkout"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.baseline],
                   check=True, capture_output=True)
    started = time.monotonic()
    try:
        baseline = run_child(worktree, loads, {}, args.repeat)
        current = run_child(REPO, loads, {}, args.repeat)
        raised = run_child(REPO, loads[1:], {"max_prompt_nodes": 200_000}, args.repeat)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], capture_output=True)
    print(f"longest event-loop stall (ms, best of {args.repeat}); baseline = {args.baseline}")
    print(f"{'load (status now)':58} {'baseline':>9} {'now':>9} {'now/baseline':>13}")
    pairs = list(zip(baseline.items(), current.items(), strict=True))
    pairs.append((list(baseline.items())[1], next(iter(raised.items()))))
    for index, ((before_name, before), (name, now)) in enumerate(pairs):
        label = name + (", --max-prompt-nodes 200000" if index == 2 else "")
        print(f"{label:58} {before:9.1f} {now:9.1f} {now / before:13.3f}   baseline: {before_name}")
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
