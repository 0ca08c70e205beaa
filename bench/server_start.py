"""Server start-up and /object_info latency.

Measures, over several runs, the time from starting ``python server.py`` to its first
answer to GET /object_info, then the latency of GET /object_info on a warm server.

    PYTHONPATH=. python bench/server_start.py [--runs 5] [--requests 200] [--nodes-package nodes]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def start(root: Path, port: int, packages: list[str]) -> tuple[subprocess.Popen, float]:
    command = [sys.executable, str(REPO / "server.py"), "--port", str(port), "--database", str(root / "db.sqlite3"),
               "--input-directory", str(root / "input"), "--output-directory", str(root / "output"),
               "--temp-directory", str(root / "temp")]
    for package in packages:
        command += ["--nodes-package", package]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    began = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        if process.poll() is not None:
            raise SystemExit("server exited during start-up")
        try:
            get(f"http://127.0.0.1:{port}/object_info")
            return process, time.perf_counter() - began
        except OSError:
            time.sleep(0.005)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--nodes-package", action="append", default=None)
    args = parser.parse_args()
    packages = args.nodes_package or ["nodes"]
    root = Path(tempfile.mkdtemp(prefix="latentgraph-start-"))
    try:
        starts = []
        latencies: list[float] = []
        size = 0
        for run in range(args.runs):
            port = free_port()
            process, elapsed = start(root / str(run), port, packages)
            starts.append(elapsed)
            try:
                if run == args.runs - 1:
                    url = f"http://127.0.0.1:{port}/object_info"
                    for _ in range(10):
                        get(url)
                    for _ in range(args.requests):
                        began = time.perf_counter()
                        size = len(get(url))
                        latencies.append(time.perf_counter() - began)
            finally:
                process.terminate()
                process.wait(20)
        nodes = get_count(size)
        print(f"node packages: {', '.join(packages)} ({nodes})")
        print(f"start -> first /object_info: median {statistics.median(starts) * 1000:.0f} ms, "
              f"min {min(starts) * 1000:.0f} ms, max {max(starts) * 1000:.0f} ms over {args.runs} runs")
        print(f"GET /object_info ({size} bytes): p50 {percentile(latencies, 0.5) * 1000:.2f} ms, "
              f"p99 {percentile(latencies, 0.99) * 1000:.2f} ms over {len(latencies)} requests")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def get_count(size: int) -> str:
    return f"document of {size} bytes"


if __name__ == "__main__":
    main()
