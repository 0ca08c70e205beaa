"""Starting real servers for tests: in a background thread, or as a separate process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from latentgraph_server.config import ServerConfig
from server import HANDLERS_KEY, Handlers, create_app

REPO = Path(__file__).resolve().parent.parent
TEST_PACKAGES = ["tests.engine_nodes", "tests.server_nodes"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_config(root: Path, **overrides: Any) -> ServerConfig:
    config = ServerConfig(
        port=0,
        input_directory=root / "input",
        output_directory=root / "output",
        temp_directory=root / "temp",
        models_directory=root / "models",
        database=root / "queue.sqlite3",
        node_packages=list(TEST_PACKAGES),
        custom_nodes_directory=root / "custom_nodes",
        web_directory=None,
        user_directory=root / "user",
        examples_directory=REPO / "workflows",
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


class ServerThread:
    """A real server (create_app + TCPSite) on a free port, run by its own loop in a thread."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.handlers: Handlers | None = None

    def __enter__(self) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        app = create_app(self.config)
        self.handlers = app[HANDLERS_KEY]
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __exit__(self, *exc: Any) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def start_process(root: Path, port: int, *extra: str) -> subprocess.Popen:
    """``python server.py`` in a subprocess, waiting until it answers."""
    command = [sys.executable, str(REPO / "server.py"), "--port", str(port),
               "--input-directory", str(root / "input"), "--output-directory", str(root / "output"),
               "--temp-directory", str(root / "temp"), "--models-directory", str(root / "models"),
               "--database", str(root / "queue.sqlite3"), "--custom-nodes-directory", str(root / "custom_nodes"),
               "--web-directory", str(root / "web"), "--user-directory", str(root / "user")]
    for package in TEST_PACKAGES:
        command += ["--nodes-package", package]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = open(root / f"server-{port}.log", "ab")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen([*command, *extra], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {(root / f'server-{port}.log').read_text()}")
        try:
            requests.get(f"http://127.0.0.1:{port}/prompt", timeout=1)
            return process
        except requests.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("server did not start")


def submit(url: str, prompt: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = requests.post(f"{url}/prompt", data=json.dumps({"prompt": prompt, **fields}), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_history(url: str, prompt_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = requests.get(f"{url}/history/{prompt_id}", timeout=10).json()
        if entry:
            return entry[prompt_id]
        time.sleep(0.02)
    raise AssertionError(f"prompt {prompt_id} did not finish")


def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def value_prompt(value: int) -> dict[str, Any]:
    return {"1": {"class_type": "NumberSource", "inputs": {"value": value}},
            "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}


def wait_prompt(seconds: float, tag: int = 0) -> dict[str, Any]:
    return {"1": {"class_type": "Wait", "inputs": {"seconds": seconds, "tag": tag}}}
