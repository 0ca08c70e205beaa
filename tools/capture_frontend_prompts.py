"""Records what ComfyUI's official frontend sends to ``POST /prompt`` for UI-format workflows.

A developer tool (not used by the server or by ``make test``): it serves the static folder
of the PyPI package ``comfyui-frontend-package`` together with minimal stand-in routes
(``/object_info`` from our node registry, empty settings, queue and history), opens it in
Debian's Chromium through Playwright, loads each workflow with the frontend's own
``app.loadGraphData`` (so its load-time fix-ups run), presses Queue through
``app.queuePrompt`` and keeps the body the frontend posts. The API documents it writes are
the oracle that tests/test_frontend_oracle.py compares ``graph.ui_format`` against.

    python tools/capture_frontend_prompts.py --out tests/data/frontend_oracle \\
        default=tests/data/frontend_oracle/workflows/default.json ...

Each ``NAME=PATH`` (or plain PATH, named by its stem) workflow gives ``NAME.json`` holding
``{"frontend_version", "workflow", "models", "prompt"}``; ``models`` lists the model files
``/object_info`` offered (``MODELS``: placeholders, so that the frontend's choice for an empty
file combo does not depend on what this checkout's models/ holds). ``template:FILE`` reads FILE from the
``comfyui-workflow-templates-json`` package. ``build:NAME`` loads the start workflow of
``BUILDS[NAME]``, edits it in the frontend as a user would (its widgets' values set, links
made), and also writes the workflow the frontend then saves (the ``extra_pnginfo`` of its
``/prompt`` body) to ``OUT/workflows/NAME.json``, which the record names. ``--frontend-static`` picks another frontend
build; by default the installed package's. Chromium is /usr/bin/chromium; no browser is
ever downloaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from graph import build_registry  # noqa: E402
from nodes.models.folders import ModelFolders  # noqa: E402
from nodes.sd.runtime import Runtime  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
# The model files /object_info lists during a capture, by kind.
MODELS = {"checkpoints": ["latentgraph-house-v1.safetensors"]}
# Settings that keep first-run dialogs and tours away from the canvas.
SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.InstalledVersion": "99.0.0",
    "Comfy.Release.Version": "99.0.0",
    "Comfy.Validation.Workflows": True,
    "Comfy.WidgetControlMode": "after",
}


ORACLE_WORKFLOWS = REPO / "tests" / "data" / "frontend_oracle" / "workflows"
# Workflows made in the frontend: a start file, then a script run on the page with the
# frontend's graph; ``set`` assigns a widget's value as the UI does (a DynamicCombo's setter
# replaces the widgets of its options), ``link`` connects an output to a named input.
_EDIT_HELPERS = """
  const graph = window.app.graph;
  const node = (id) => graph.getNodeById(id);
  const set = (id, name, value) => {
    const widget = node(id).widgets.find((w) => w.name === name);
    if (!widget) throw new Error(`node ${id} has no widget ${name}: ${node(id).widgets.map((w) => w.name)}`);
    widget.value = value;
  };
  const link = (from, id, name) => node(from).connect(0, node(id), node(id).inputs.findIndex((i) => i.name === name));
"""
BUILDS: dict[str, tuple[str, str]] = {
    # DynamicCombos (ResizeImageMaskNode, SaveImageAdvanced): options switched, their own
    # widgets set, a revealed link input, per-option defaults and a nested combo.
    "dynamic_combos": ("dynamic_combos_start.json", """
  set(3, "resize_type", "scale by multiplier");
  set(3, "resize_type", "match size");
  link(2, 3, "resize_type.match");
  set(3, "resize_type.crop", "disabled");
  set(4, "resize_type", "scale by multiplier");
  set(4, "resize_type.multiplier", 2.5);
  set(4, "scale_method", "bicubic");
  set(5, "format", "exr");
  set(5, "format.input_color_space", "linear");
  set(6, "filename_prefix", "anim");
  set(6, "format", "avif");
  set(6, "format.crf", 30);
  set(6, "format.save_mode", "animated");
  set(6, "format.save_mode.fps", 12);
  set(7, "format", "png");
  set(7, "format.bit_depth", "16-bit");
"""),
}


def frontend_static() -> tuple[Path, str]:
    """The installed comfyui-frontend-package's static folder and its version."""
    from importlib.metadata import version

    import comfyui_frontend_package

    return Path(comfyui_frontend_package.__file__).parent / "static", version("comfyui-frontend-package")


def templates_folder() -> Path:
    import comfyui_workflow_templates_json

    return Path(comfyui_workflow_templates_json.__file__).parent / "templates"


class StandIn:
    """The routes the frontend needs to boot and queue, answered minimally; POST /prompt
    bodies are collected in ``prompts`` instead of being run."""

    def __init__(self, static: Path, object_info: dict[str, Any]) -> None:
        self.static = static
        self.object_info = object_info
        self.prompts: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.unknown: list[str] = []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.log])
        answers: dict[str, Any] = {
            "/users": {"storage": "server", "migrated": True},
            "/settings": SETTINGS,
            "/object_info": self.object_info,
            "/extensions": [],
            "/embeddings": [],
            "/i18n": {},
            "/features": {"supports_preview_metadata": False},
            "/history": {},
            "/queue": {"queue_running": [], "queue_pending": []},
            "/prompt": {"exec_info": {"queue_remaining": 0}},
            "/jobs": {"jobs": [], "pagination": {"offset": 0, "limit": 0, "total": 0, "has_more": False}},
            "/system_stats": {"system": {"os": "posix", "python_version": sys.version, "comfyui_version": "0.8.0",
                                         "embedded_python": False, "argv": []}, "devices": []},
            "/models": [],
            "/experiment/models": [],
            "/global_subgraphs": {},
            "/workflow_templates": {},
            "/userdata": [],
        }
        for prefix in ("", "/api"):
            for path, body in answers.items():
                app.router.add_get(prefix + path, self.constant(body))
            app.router.add_post(prefix + "/prompt", self.prompt)
            app.router.add_post(prefix + "/settings/{id}", self.accept)
            app.router.add_post(prefix + "/settings", self.accept)
            app.router.add_get(prefix + "/ws", self.websocket)
        app.router.add_get("/", self.index)
        app.router.add_static("/", self.static)
        return app

    @web.middleware
    async def log(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path_qs}")
        try:
            return await handler(request)
        except web.HTTPNotFound:
            self.unknown.append(f"{request.method} {request.path}")
            raise

    @staticmethod
    def constant(body: Any) -> Any:
        async def handler(_request: web.Request) -> web.Response:
            return web.json_response(body)
        return handler

    async def index(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(self.static / "index.html")

    async def accept(self, _request: web.Request) -> web.Response:
        return web.json_response({})

    async def prompt(self, request: web.Request) -> web.Response:
        self.prompts.append(await request.json())
        return web.json_response({"prompt_id": f"captured-{len(self.prompts)}", "number": len(self.prompts),
                                  "node_errors": {}})

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        sid = request.query.get("clientId", "capture")
        await socket.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                           "sid": sid}})
        async for _message in socket:
            pass
        return socket


def serve(stand_in: StandIn) -> tuple[str, Any]:
    """Runs the stand-in server on a free loopback port in a thread; returns its URL and a stopper."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(stand_in.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["runner"] = runner
        state["port"] = runner.addresses[0][1]
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    started.wait(30)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)

    return f"http://127.0.0.1:{state['port']}", stop


def read_workflow(source: str) -> dict[str, Any]:
    if source.startswith("build:"):
        return json.loads((ORACLE_WORKFLOWS / BUILDS[source[len("build:"):]][0]).read_text(encoding="utf-8"))
    path = templates_folder() / source[len("template:"):] if source.startswith("template:") else Path(source)
    return json.loads(path.read_text(encoding="utf-8"))


def placeholder_models(root: Path, models: dict[str, list[str]]) -> ModelFolders:
    """Empty files named like ``models`` under ``root``: enough for the combo lists."""
    for kind, names in models.items():
        for name in names:
            (root / kind / name).parent.mkdir(parents=True, exist_ok=True)
            (root / kind / name).write_bytes(b"")
    return ModelFolders(root)


def capture(workflows: dict[str, dict[str, Any]], static: Path, *, show_console: bool = False,
            server: str | None = None, edits: dict[str, str] | None = None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Loads each workflow into the frontend and returns the /prompt body it sent, by name,
    and the routes the frontend asked for that the stand-in did not have.

    ``edits``: by name, JavaScript run on the page after the workflow is loaded (with the
    helpers of ``_EDIT_HELPERS``), before it is queued.

    ``server``: the URL of a running Latentgraph server that serves the official frontend
    (``python server.py --front-end official``) to use instead of the stand-in; its model
    lists are then whatever its folders hold. The bodies are read from the browser's
    requests, so a prompt that server refuses is captured all the same.
    """
    import tempfile

    from playwright.sync_api import sync_playwright

    edits = edits or {}
    stand_in: StandIn | None = None
    stop = None
    if server is None:
        registry = build_registry("nodes", None)
        runtime = Runtime(models=placeholder_models(Path(tempfile.mkdtemp(prefix="capture-models-")), MODELS))
        stand_in = StandIn(static, json.loads(json.dumps(registry.object_info(runtime), default=repr)))
        url, stop = serve(stand_in)
    else:
        url = server.rstrip("/")
    bodies: dict[str, dict[str, Any]] = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            if show_console:
                page.on("console", lambda message: print("console:", message.type, message.text, file=sys.stderr))
            page.on("pageerror", lambda error: print("page error:", error, file=sys.stderr))
            page.goto(url + "/")
            page.wait_for_function("window.app && window.app.graph && window.app.canvas", timeout=180000)
            for name, workflow in workflows.items():
                page.evaluate("async (wf) => { await window.app.loadGraphData(wf, true, true, null); }", workflow)
                if name in edits:
                    page.evaluate("async () => {" + _EDIT_HELPERS + edits[name] + "}")
                with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/prompt"),
                                         timeout=30000) as posted:
                    # A refused prompt makes queuePrompt report an error in the page; the body
                    # it sent is what is wanted here.
                    page.evaluate("async () => { try { await window.app.queuePrompt(0, 1); } catch (e) {} }")
                bodies[name] = posted.value.post_data_json
            browser.close()
    finally:
        if stop is not None:
            stop()
    return bodies, sorted(set(stand_in.unknown)) if stand_in is not None else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflows", nargs="+", help="NAME=PATH, PATH, or NAME=template:FILE")
    parser.add_argument("--out", type=Path, required=True, help="folder for NAME.json")
    parser.add_argument("--frontend-static", type=Path, help="a frontend build (default: the installed package)")
    parser.add_argument("--console", action="store_true", help="print the page's console")
    parser.add_argument("--server", help="URL of a running server with --front-end official, instead of the "
                                         "stand-in (records the models that server lists as they are)")
    args = parser.parse_args(argv)
    static, version = frontend_static()
    if args.frontend_static:
        static = args.frontend_static
    named: dict[str, str] = {}
    for item in args.workflows:
        name, _, source = item.partition("=") if "=" in item else (Path(item).stem, "", item)
        named[name] = source
    edits = {name: BUILDS[source[len("build:"):]][1] for name, source in named.items() if source.startswith("build:")}
    workflows = {name: read_workflow(source) for name, source in named.items()}
    bodies, unknown = capture(workflows, static, show_console=args.console, server=args.server, edits=edits)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, body in bodies.items():
        if name in edits:  # keep the workflow as the frontend saved it; the record reads that
            saved = (args.out / "workflows" / f"{named[name][len('build:'):]}.json").resolve()
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(body["extra_data"]["extra_pnginfo"]["workflow"], indent=1) + "\n",
                             encoding="utf-8")
            named[name] = str(saved.relative_to(REPO)) if saved.is_relative_to(REPO) else str(saved)
        record = {"frontend_version": version, "workflow": named[name], "models": MODELS if not args.server else {},
                  "prompt": body.get("prompt")}
        (args.out / f"{name}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"{name}: {len(record['prompt'] or {})} nodes -> {args.out / (name + '.json')}")
    if unknown:
        print("routes the stand-in did not answer:", ", ".join(unknown), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
