"""Latentgraph's server: ComfyUI's HTTP and websocket API over the engine.

Thin by design: routes translate HTTP to the persistent queue (``latentgraph_server.
queue_store``), the prompt worker runs prompts on its own thread, and the hub carries
their events to websocket clients. Run ``python server.py --help`` for the flags.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from graph import (
    Engine,
    Folders,
    NodeRegistry,
    PreparationCancelled,
    PromptLimits,
    PromptTooLarge,
    build_registry,
)
from graph.cache import OutputCache
from latentgraph_server import frontend, jobs, model_library, server_logs, settings, userdata, views
from latentgraph_server.config import ServerConfig, config_from_args
from latentgraph_server.errors import BadRequest, error_middleware, error_response
from latentgraph_server.hub import Connection, Hub, encode_message
from latentgraph_server.openapi import API_PREFIX, Route, mount, openapi_document
from latentgraph_server.previews import explain_method, install_taesd_previews, remove_taesd_previews
from latentgraph_server.prompt_request import MAX_ID_LENGTH, PromptRequest, parse_prompt_request
from latentgraph_server.queue_store import QueueStore, shown_number
from latentgraph_server.request_bounds import MAX_JSON_BODY, prompt_memory_limit, read_json
from latentgraph_server.security import is_loopback, make_security_middleware, redact_argv
from latentgraph_server.system_info import package_version, system_stats
from latentgraph_server.worker import PromptWorker
from nodes import make_runtime
from nodes.models.folders import ModelFolders, no_checkpoint_warning
from nodes.sd.host_memory import tune_allocator

log = logging.getLogger("latentgraph.server")

# The one route table: this module's rows and each module's own, mounted on the attribute of
# Handlers that handles them. It is what create_app registers and /openapi.json describes.
ROUTES = [
    Route("GET", "/object_info", "object_info", "Every node definition"),
    Route("GET", "/object_info/{node_class}", "object_info_node", "One node definition"),
    Route("POST", "/prompt", "post_prompt", "Validate and queue a workflow (API or UI format)", body="json",
          responses={"400": "invalid workflow: {error, node_errors}"}),
    Route("GET", "/prompt", "get_prompt", "Queue size"),
    Route("GET", "/queue", "get_queue", "Running and pending prompts"),
    Route("POST", "/queue", "post_queue", "Delete pending prompts or clear the queue", body="json"),
    Route("GET", "/history", "get_history", "Finished prompts", query=("max_items", "offset")),
    Route("GET", "/history/{prompt_id}", "get_history_item", "One finished prompt"),
    Route("POST", "/history", "post_history", "Delete history entries or clear it", body="json"),
    Route("POST", "/interrupt", "post_interrupt", "Interrupt the running prompt", body="json"),
    Route("POST", "/free", "post_free", "Free cached outputs and models", body="json"),
    *mount("files", views.ROUTES, qualified_ids=False),
    Route("GET", "/system_stats", "get_system_stats", "Machine and devices"),
    Route("GET", "/models", "get_model_types", "Model folder names"),
    Route("GET", "/models/{folder}", "get_models", "Model files in a folder"),
    Route("GET", "/embeddings", "get_embeddings", "Embedding names"),
    Route("GET", "/extensions", "get_extensions", "Editor extension scripts"),
    Route("GET", "/openapi.json", "get_openapi", "This document"),
    *mount("library", userdata.ROUTES, qualified_ids=False),
    Route("GET", "/ws", "websocket", "Websocket of events (?clientId=ID; ?token=T with --auth-token)",
          query=("clientId", "token")),
    # The routes the official ComfyUI frontend reads beyond the core API.
    *mount("settings", settings.ROUTES),
    *mount("jobs", jobs.ROUTES),
    *mount("model_library", model_library.ROUTES),
    *mount("server_logs", server_logs.ROUTES),
    *mount("front_end", frontend.ROUTES),
]

# Query integers (history windows) beyond this are refused rather than passed to SQLite.
MAX_QUERY_INT = 2**62
LIMIT_FLAGS = {"max_nodes": "--max-prompt-nodes", "max_subgraph_instances": "--max-subgraph-instances"}


async def read_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    body = await read_json(request, allow_empty=allow_empty)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def id_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest(f"{what} must be a list of prompt ids")
    return value


class Handlers:
    """Route handlers; one instance per application, holding its collaborators explicitly."""

    def __init__(self, config: ServerConfig, engine: Engine, store: QueueStore, hub: Hub, worker: PromptWorker) -> None:
        self.config = config
        self.engine = engine
        self.registry = engine.registry
        self.store = store
        self.hub = hub
        # Folders and model folders, shared with validation and the nodes (the engine's runtime).
        self.folders: Folders = engine.folders
        self.models: ModelFolders = engine.runtime.models
        self.worker = worker
        # The route handlers of the other modules (their rows are mounted in ROUTES).
        self.files = views.Files(self.folders, config.max_upload_size)
        self.library = userdata.WorkflowLibrary(config.user_directory, config.examples_directory)
        self.settings = settings.UserSettings(config.user_directory)
        self.jobs = jobs.Jobs(store, worker.interrupt, self.broadcast_status)
        self.model_library = model_library.ModelLibrary(self.models, self.folders)
        self.front_end = frontend.FrontEndRoutes(config.max_upload_size)
        self.log_buffer = server_logs.LogBuffer(hub.send_threadsafe)
        self.server_logs = server_logs.ServerLogs(self.log_buffer)
        memory_limit = config.max_prompt_memory
        if memory_limit is None:
            memory_limit = prompt_memory_limit(config.memory_reserve)
        self.limits = PromptLimits(config.max_prompt_nodes, config.max_subgraph_instances, config.max_text_length,
                                   memory_limit)

    # -- queue status ---------------------------------------------------------------

    def status_payload(self) -> dict[str, Any]:
        return {"status": {"exec_info": {"queue_remaining": self.store.remaining()}}}

    def broadcast_status(self) -> None:
        """Sends the queue size to every client (loop thread)."""
        self.hub.send(None, "status", self.status_payload())

    # -- node definitions -------------------------------------------------------------

    async def object_info(self, request: web.Request) -> web.Response:
        text = await asyncio.to_thread(lambda: json.dumps(self.engine.object_info(), default=repr))
        return web.Response(text=text, content_type="application/json")

    async def object_info_node(self, request: web.Request) -> web.Response:
        definition = self.registry.get(request.match_info["node_class"])
        if definition is None:
            return web.json_response({})
        return web.json_response({definition.name: definition.object_info(self.engine.runtime)}, dumps=_dumps)

    # -- prompts ------------------------------------------------------------------------

    async def post_prompt(self, request: web.Request) -> web.Response:
        prompt = parse_prompt_request(await read_object(request), self.config.max_extra_data)
        checked = await self._prepare(request, prompt)
        if not checked.ok:
            return web.json_response(checked.response(), status=400, dumps=_dumps)
        api_prompt, extra_data = prompt.queue_row(checked)
        prompt_id = prompt.prompt_id
        try:
            number = await asyncio.to_thread(self.store.add, prompt_id, api_prompt, extra_data, checked.outputs,
                                             prompt.client_id, number=prompt.number, front=prompt.front,
                                             size_hint=request.content_length or 0)
        except sqlite3.IntegrityError as exc:
            raise BadRequest(f"prompt_id {prompt_id!r} was already used", "duplicate_prompt_id") from exc
        # The worker runs this plan, not a second preparation. It may claim the prompt before
        # the plan is held (then it prepares it again); a plan never taken ages out (Engine).
        self.engine.hold(prompt_id, checked)
        self.worker.wake()
        self.broadcast_status()
        return web.json_response({"prompt_id": prompt_id, "number": shown_number(number), "node_errors": {}})

    async def _prepare(self, request: web.Request, prompt: PromptRequest) -> Any:
        """The engine's preparation of the document (on a thread, stopped if the client goes away);
        a document it cannot read is a BadRequest."""
        cancel = threading.Event()
        watcher = asyncio.create_task(_cancel_when_disconnected(request, cancel))
        try:
            return await asyncio.to_thread(self.engine.prepare, prompt.document, prompt.targets, limits=self.limits,
                                           cancel=cancel)
        except asyncio.CancelledError:
            cancel.set()  # the server is stopping: stop converting this document
            raise
        except PreparationCancelled as exc:  # the client went away (no one reads this answer)
            raise BadRequest(str(exc), "cancelled") from exc
        except PromptTooLarge as exc:
            raise BadRequest(f"{exc} ({LIMIT_FLAGS.get(exc.limit, exc.limit)})", "prompt_too_large") from exc
        except Exception as exc:  # a document shape the engine did not anticipate
            log.exception("validation raised")
            raise BadRequest(f"cannot read the workflow: {exc}", "invalid_prompt") from exc
        finally:
            watcher.cancel()

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.status_payload()["status"])

    async def get_queue(self, request: web.Request) -> web.Response:
        return web.Response(text=self.store.queue_json(), content_type="application/json")

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        if body.get("clear"):
            self.store.clear_pending()
        if "delete" in body:
            self.store.delete_pending(id_list(body["delete"], "delete"))
        self.broadcast_status()
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        max_items = _int_query(request, "max_items")
        offset = _int_query(request, "offset")
        history = self.store.history(max_items, -1 if offset is None else offset)
        return web.json_response(history, dumps=_dumps)

    async def get_history_item(self, request: web.Request) -> web.Response:
        return web.json_response(self.store.history_item(request.match_info["prompt_id"]), dumps=_dumps)

    async def post_history(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        if body.get("clear"):
            self.store.clear_history()
        if "delete" in body:
            self.store.delete_history(id_list(body["delete"], "delete"))
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        body = await read_object(request, allow_empty=True)
        prompt_id = body.get("prompt_id")
        if prompt_id is not None and not isinstance(prompt_id, str):
            raise BadRequest("prompt_id must be a string")
        self.worker.interrupt(prompt_id or None)  # as ComfyUI's `if prompt_id:`: an empty id is a global interrupt
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        body = await read_object(request, allow_empty=True)
        self.worker.request_free(unload_models=bool(body.get("unload_models")),
                                 free_memory=bool(body.get("free_memory")))
        return web.Response(status=200)

    # -- system and models -------------------------------------------------------------------

    async def get_system_stats(self, request: web.Request) -> web.Response:
        stats = await asyncio.to_thread(system_stats, self.config.cpu, redact_argv(sys.argv))
        stats["latentgraph"] = {"worker": self.worker.health(), "limits": {
            "max_json_body": self.config.max_json_body, "max_extra_data": self.config.max_extra_data,
            "max_prompt_nodes": self.limits.max_nodes, "max_subgraph_instances": self.limits.max_subgraph_instances,
            "max_text_length": self.limits.max_text_length, "max_prompt_memory": self.limits.memory_bytes},
            # Plugins skipped at start-up (an import error, sys.exit, or a hang past the timeout).
            "plugin_failures": [{"name": failure.name, "message": failure.message}
                                for failure in self.registry.plugin_failures]}
        return web.json_response(stats)

    async def get_model_types(self, request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(self.models.kinds))

    async def get_models(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in await asyncio.to_thread(self.models.kinds):
            return error_response(404, f"no model folder {folder!r}", "not_found", node_errors=True)
        return web.json_response(await asyncio.to_thread(self.models.list, folder))

    async def get_embeddings(self, request: web.Request) -> web.Response:
        names = await asyncio.to_thread(self.models.list, "embeddings")
        return web.json_response([name.rsplit(".", 1)[0] for name in names])

    async def get_extensions(self, request: web.Request) -> web.Response:
        root = self.config.web_directory
        found = []
        if root is not None and (root / "extensions").is_dir():
            found = sorted("/" + p.relative_to(root).as_posix() for p in (root / "extensions").rglob("*.js"))
        return web.json_response(found)

    async def get_openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(ROUTES, package_version("latentgraph") or "0.1.0"))

    # -- websocket -------------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1024 * 1024)
        await socket.prepare(request)
        client_id = request.query.get("clientId") or uuid.uuid4().hex
        client_id = client_id[:MAX_ID_LENGTH]
        connection = Connection(client_id, socket)
        self.hub.add(connection)
        connection.outbox.put_nowait(encode_message("status", {**self.status_payload(), "sid": client_id}))
        for running in self.worker.running_prompts():  # a reconnecting client learns where its prompts are
            if running.client_id == client_id and running.node is not None:
                connection.outbox.put_nowait(encode_message("executing", {
                    "node": running.node, "display_node": running.node, "prompt_id": running.prompt_id}))
        sender = asyncio.create_task(connection.run_sender())
        try:
            async for message in socket:
                flags = _feature_flags(message)
                if flags is not None:  # ComfyUI's handshake: the client's flags, answered with the server's
                    connection.feature_flags = flags
                    connection.outbox.put_nowait(encode_message("feature_flags", self.front_end.features))
        finally:
            self.hub.remove(connection)
            await asyncio.gather(sender, return_exceptions=True)
        return socket

    async def index(self, request: web.Request) -> web.StreamResponse:
        root = self.config.web_directory
        if root is not None and (root / "index.html").is_file():
            return web.FileResponse(root / "index.html")
        return web.Response(text="Latentgraph is running. API: /openapi.json\n")


def _feature_flags(message: Any) -> dict[str, Any] | None:
    """The data of a client's ``{"type": "feature_flags", "data": {...}}`` message, else None."""
    if message.type != WSMsgType.TEXT:
        return None
    try:
        decoded = json.loads(message.data)
    except ValueError:
        return None
    if not isinstance(decoded, dict) or decoded.get("type") != "feature_flags":
        return None
    data = decoded.get("data")
    return data if isinstance(data, dict) else None


async def _cancel_when_disconnected(request: web.Request, cancel: threading.Event) -> None:
    """Sets ``cancel`` once the client's connection closes (aiohttp does not cancel handlers)."""
    while not cancel.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            cancel.set()
            return
        await asyncio.sleep(0.1)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=repr)


def _int_query(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw) if len(raw) <= 20 else None
    except ValueError:
        value = None
    if value is None or abs(value) > MAX_QUERY_INT:
        raise BadRequest(f"{name} must be an integer between -{MAX_QUERY_INT} and {MAX_QUERY_INT}")
    return value


def make_registry(config: ServerConfig) -> NodeRegistry:
    registry = build_registry(config.node_packages, config.custom_nodes_directory,
                              disable_plugins=config.disable_all_custom_nodes,
                              import_timeout=config.plugin_import_timeout or None)
    for failure in registry.plugin_failures:
        log.warning("plugin %s failed to load and was skipped:\n%s", failure.name, failure.traceback)
    return registry


def make_engine(config: ServerConfig, cache: OutputCache | None = None) -> Engine:
    """The server's one engine: the node packages' registry and plugins, the output cache
    and the nodes' runtime over the configured folders. Builds no torch state: the runtime
    starts (imports torch) when the first prompt runs."""
    folders = Folders(Path(config.input_directory), Path(config.output_directory), Path(config.temp_directory))
    try:
        models = ModelFolders.from_configs(config.models_directory, list(config.extra_model_paths_config))
    except (OSError, ValueError) as exc:
        log.error("cannot read extra model paths, using %s only: %s", config.models_directory, exc)
        models = ModelFolders(Path(config.models_directory))
    # The nodes' runtime, whichever node packages are loaded (they all run on it).
    runtime = make_runtime(folders, models=models, settings=config.device_settings)
    if cache is None:
        pools = {"models": config.model_cache_budget} if config.model_cache_budget is not None else None
        cache = OutputCache(config.cache_budget, pool_budgets=pools)
    on_start = None
    if config.preview_method in ("auto", "taesd"):
        def on_start() -> None:
            install_taesd_previews(models.folders("vae_approx"))
    return Engine(make_registry(config), runtime, cache=cache, folders=folders, on_start=on_start)


HANDLERS_KEY = web.AppKey("latentgraph_handlers", Handlers)
WATCHDOG_KEY = web.AppKey("latentgraph_watchdog", asyncio.Task)
WATCHDOG_SECONDS = 1.0


def create_app(config: ServerConfig) -> web.Application:
    """The aiohttp application; its worker starts and stops with the app."""
    engine = make_engine(config)
    folders, models = engine.folders, engine.runtime.models
    for folder in (folders.input, folders.output, folders.temp):
        folder.mkdir(parents=True, exist_ok=True)
    store = QueueStore(config.database)
    recovered = store.recover_interrupted()
    if recovered:
        log.warning("recorded %d prompt(s) interrupted by the last shutdown: %s", len(recovered), recovered)
    hub = Hub()
    worker: Any
    if config.ray_address:
        # Imported only here: without --ray, Ray is never imported (an optional extra).
        from latentgraph_server.ray_dispatch import RayDispatcher

        worker = RayDispatcher(config, store, engine, hub.send_threadsafe, hub.send_preview_threadsafe,
                               on_queue_changed=lambda: None)
    else:
        worker = PromptWorker(store, engine, hub.send_threadsafe, hub.send_preview_threadsafe, on_queue_changed=lambda: None,
                              preview_method=config.preview_method)
    missing = no_checkpoint_warning(models)
    if missing:
        log.warning("%s", missing)
    note = explain_method(config.preview_method, models.folders("vae_approx"))
    if note:
        log.warning("%s", note)
    handlers = Handlers(config, engine, store, hub, worker)
    worker.on_queue_changed = lambda: hub.call_soon(handlers.broadcast_status)

    security = make_security_middleware(config.auth_token, is_loopback(config.listen))
    app = web.Application(middlewares=[error_middleware, security],
                          client_max_size=config.max_upload_size + 1024 * 1024)
    app[HANDLERS_KEY] = handlers
    app[MAX_JSON_BODY] = config.max_json_body
    for route in ROUTES:  # a method of Handlers, or of its route object route.owner
        handler = getattr(getattr(handlers, route.owner) if route.owner else handlers, route.handler)
        for prefix in ("", API_PREFIX):
            app.router.add_route(route.method, prefix + route.path, handler)
    app.router.add_get("/", handlers.index)
    if config.web_directory is not None and config.web_directory.is_dir():
        app.router.add_static("/", config.web_directory)

    async def watch_worker() -> None:
        while True:
            await asyncio.sleep(WATCHDOG_SECONDS)
            try:
                await asyncio.to_thread(worker.ensure_running)
            except Exception:
                log.exception("the worker watchdog failed")

    async def on_startup(app: web.Application) -> None:
        hub.attach(asyncio.get_running_loop())
        handlers.log_buffer.attach()
        worker.start()
        app[WATCHDOG_KEY] = asyncio.create_task(watch_worker())

    async def on_shutdown(app: web.Application) -> None:
        app[WATCHDOG_KEY].cancel()
        await hub.close_all()

    async def on_cleanup(app: web.Application) -> None:
        handlers.log_buffer.detach()
        await asyncio.to_thread(worker.stop)
        if config.preview_method in ("auto", "taesd"):
            remove_taesd_previews()
        store.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def main(argv: list[str] | None = None) -> None:
    config = config_from_args(argv)
    tune_allocator()  # before any thread starts (see nodes.sd.host_memory)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if config.cpu:
        # Set before torch is first imported (by the worker), so every node sees no GPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if not is_loopback(config.listen) and not config.auth_token:
        log.warning("listening on %s without --auth-token: anyone who can reach this port can use it",
                    config.listen)
    try:
        app = create_app(config)
    except (sqlite3.Error, OSError) as exc:
        log.error("cannot start: %s (queue database %s)", exc, config.database)
        raise SystemExit(1) from None
    print(f"Latentgraph listening on http://{config.listen}:{config.port}", flush=True)
    if config.auth_token:
        print(f"Editor: http://{config.listen}:{config.port}/?token=<your --auth-token>", flush=True)
    web.run_app(app, host=config.listen, port=config.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
