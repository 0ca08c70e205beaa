"""The Ray worker: one actor per device, running the prompts the front server sends it.

``PromptRunner`` is a plain class (tests can drive it in-process); ``remote_runner`` makes it
a Ray actor. It runs a prompt exactly as the local worker does: it holds an unstarted
``latentgraph_server.worker.PromptWorker`` and calls its ``_execute`` (validation, the
executor, failures of any kind, SystemExit included) and ``_apply_free_request``. What
differs is where the results go: ``run`` is a streaming generator that yields batches of
messages, in the order they happened, to the front server:

- ``("event", name, data)``: an engine event (previews already JPEG-encoded);
- ``("file", kind, subfolder, name, bytes)``: a new file of the worker's output or temp
  folder, sent before the ``executed`` event that may name it;
- ``("done", outputs, status, meta, info)``: the end of the prompt and the worker's state.

The worker has its own scratch folders (``LATENTGRAPH_WORKER_SCRATCH``, default the system
temp folder): nothing on its disk is assumed to be visible to the front server. Models come
from ``LATENTGRAPH_MODELS_DIRECTORY`` when set on the worker's machine (before ``ray start``),
else from the front server's ``--models-directory`` path, which must then exist there too.

The actor is threaded (``max_concurrency``), so ``interrupt``, ``free``, ``ping`` and
``info`` are answered while a prompt runs.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from graph import Folders
from graph.cache import CacheEntry, OutputCache
from graph.executor import error_event, failed_status
from latentgraph_server.config import ServerConfig
from latentgraph_server.previews import encode_image, preview_policy
from latentgraph_server.queue_store import QueueItem
from latentgraph_server.ray_files import EncodedImage, FolderWatch, write_inputs
from latentgraph_server.ray_routing import model_label, node_key
from latentgraph_server.worker import PromptWorker, RunningPrompt
from nodes.save_websocket import IMAGE_EVENT

# Interrupts that arrived before their prompt did (kept so a quick /interrupt is not lost).
_EARLY_INTERRUPTS = 64


class ModelTrackingCache(OutputCache):
    """The output cache, also noting which node put each "models"-pool entry, so the worker
    can say which models it holds (``latentgraph_server.ray_routing``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.current: tuple[str, str] | None = None  # (key, label) of the node now running
        self._models: dict[str, tuple[str, str]] = {}  # cache key -> (model key, label)

    def put(self, key: str, outputs: list[list[Any]], ui: dict[str, Any] | None) -> CacheEntry:
        entry = super().put(key, outputs, ui)
        if entry.pool == "models" and self.current is not None:
            self._models[key] = self.current
        return entry

    def models(self) -> dict[str, str]:
        """Model key -> label of the models still in the cache."""
        held = {}
        for key, (model_key, label) in list(self._models.items()):
            if key in self:
                held[model_key] = label
            else:
                self._models.pop(key, None)
        return held


SCRATCH_PREFIX = "latentgraph-worker-"


def scratch_folder() -> Path:
    return Path(os.environ.get("LATENTGRAPH_WORKER_SCRATCH") or tempfile.gettempdir())


def sweep_scratch(scratch: Path) -> list[Path]:
    """Removes the scratch folders of workers whose process is gone (everything in them was
    shipped to the front server already); returns them. A worker's folder ends in its pid."""
    removed = []
    for folder in scratch.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def worker_config(config: ServerConfig, name: str) -> ServerConfig:
    """The front server's configuration, with this machine's own folders."""
    root = scratch_folder() / f"{SCRATCH_PREFIX}{name}-{os.getpid()}"
    models = os.environ.get("LATENTGRAPH_MODELS_DIRECTORY")
    custom_nodes = os.environ.get("LATENTGRAPH_CUSTOM_NODES_DIRECTORY")
    return dataclasses.replace(
        config, input_directory=root / "input", output_directory=root / "output", temp_directory=root / "temp",
        models_directory=Path(models) if models else config.models_directory,
        custom_nodes_directory=Path(custom_nodes) if custom_nodes else config.custom_nodes_directory,
        database=root / "unused.sqlite3")


class PromptRunner:
    """One worker: its own registry, output cache (with loaded models) and executor."""

    def __init__(self, config: ServerConfig, name: str) -> None:
        if config.cpu:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported, as server.main does
        # server.py's builders, so a worker is set up exactly as the local worker is.
        from server import make_engine

        self.name = name
        sweep_scratch(scratch_folder())
        self.config = worker_config(config, name)
        self.folders = Folders(self.config.input_directory, self.config.output_directory,
                               self.config.temp_directory)
        for folder in (self.folders.input, self.folders.output, self.folders.temp):
            folder.mkdir(parents=True, exist_ok=True)
        pools = {"models": config.model_cache_budget} if config.model_cache_budget is not None else None
        self.cache = ModelTrackingCache(config.cache_budget, pool_budgets=pools)
        # The local worker as a library: never started, no queue, no hub.
        self.worker = PromptWorker(None, make_engine(self.config, self.cache),  # type: ignore[arg-type]
                                   send=lambda *_: None, send_preview=lambda *_: None,
                                   on_queue_changed=lambda: None, preview_method=config.preview_method)
        self.watch = FolderWatch({"output": self.folders.output, "temp": self.folders.temp})
        self._lock = threading.Lock()
        self._running: RunningPrompt | None = None
        self._early: list[str] = []
        self.prompts_run = 0

    # -- answered at any time ---------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        return self.info()

    def info(self) -> dict[str, Any]:
        with self._lock:
            running = self._running.prompt_id if self._running else None
        return {"name": self.name, "host": socket.gethostname(), "pid": os.getpid(), "node_id": _node_id(),
                "device": self._device(), "models": self.cache.models(), "cached_bytes": self.cache.total_bytes,
                "prompts_run": self.prompts_run, "running": running}

    def interrupt(self, prompt_id: str | None = None) -> bool:
        with self._lock:
            running = self._running
            if running is not None and (prompt_id is None or running.prompt_id == prompt_id):
                running.interrupt.set()
                return True
            if prompt_id is not None:
                self._early = [*self._early[-(_EARLY_INTERRUPTS - 1):], prompt_id]
            return False

    def free(self, unload_models: bool, free_memory: bool) -> None:
        """POST /free, applied before the next prompt (or now, when idle)."""
        self.worker.request_free(unload_models=unload_models, free_memory=free_memory)
        with self._lock:
            idle = self._running is None
        if idle:
            self.worker._apply_free_request()

    # -- a prompt -------------------------------------------------------------------------

    def run(self, item: dict[str, Any], inputs: dict[str, bytes]) -> Iterator[list[tuple[Any, ...]]]:
        """Runs one prompt, yielding its messages in batches (see the module docstring)."""
        messages: queue.Queue[tuple[Any, ...]] = queue.Queue()
        thread = threading.Thread(target=self._run_prompt, args=(item, inputs, messages), daemon=True,
                                  name=f"latentgraph-prompt-{item['prompt_id']}")
        thread.start()
        while True:
            batch = [messages.get()]
            while True:  # everything that is already waiting travels as one batch
                try:
                    batch.append(messages.get_nowait())
                except queue.Empty:
                    break
            yield batch
            if batch[-1][0] == "done":
                return

    def _run_prompt(self, raw: dict[str, Any], inputs: dict[str, bytes], out: queue.Queue) -> None:
        item = QueueItem(raw["number"], raw["prompt_id"], raw["prompt"], raw["extra_data"],
                         raw["outputs_to_execute"], raw["client_id"])
        running = RunningPrompt(item.prompt_id, item.client_id)
        with self._lock:
            self._running = running
            if item.prompt_id in self._early:
                running.interrupt.set()
        outputs: dict[str, Any] = {}
        status: dict[str, Any] = {"status_str": "error", "completed": False, "messages": []}
        meta: dict[str, Any] = {}
        try:
            self.worker._apply_free_request()
            write_inputs(self.folders.input, inputs)
            policy = preview_policy(item.extra_data, self.worker.preview_method)
            outputs, status, meta = self.worker._execute(item, running,
                                                         lambda e, d: self._on_event(item, policy, out, e, d))
            if not status.get("completed"):
                self.worker.engine.release()  # as the local worker: a failed prompt's memory goes back
        except BaseException as exc:  # the actor must answer with a result whatever happened
            error = error_event(item.prompt_id, f"{type(exc).__name__}: {exc}", type(exc).__name__)
            out.put(("event", "execution_error", error))
            status = failed_status("execution_error", error)
        finally:
            self.cache.current = None
            self._ship_files(out)
            with self._lock:
                self._running = None
                self.prompts_run += 1
            out.put(("done", outputs, status, meta, self.info()))

    def _on_event(self, item: QueueItem, policy: str, out: queue.Queue, event: str, data: dict[str, Any]) -> None:
        if event == "executing":
            node = item.prompt.get(str(data.get("node")))
            inputs = node.get("inputs") if isinstance(node, dict) else None
            key = node_key(node["class_type"], inputs) if isinstance(inputs, dict) else None
            self.cache.current = (key, model_label(node["class_type"], inputs)) if key else None
        elif event == "preview":
            if policy == "none" or item.client_id is None or data.get("image") is None:
                return  # nobody would get it: it does not travel
            data = {**data, "image": EncodedImage(encode_image(data["image"]), "JPEG")}
        elif event == IMAGE_EVENT:
            if item.client_id is None or data.get("image") is None:
                return
            data = {**data, "image": EncodedImage(encode_image(data["image"], png=True), "PNG")}
        elif event == "executed":
            self._ship_files(out)  # the files an `executed` names are at the front before it is
        out.put(("event", event, data))

    def _ship_files(self, out: queue.Queue) -> None:
        for kind, subfolder, name, data in self.watch.changes():
            out.put(("file", kind, subfolder, name, data))

    def _device(self) -> str:
        gpus = _gpu_ids()
        if self.config.cpu or not gpus:
            return "cpu"
        torch = sys.modules.get("torch")  # named only once the worker has imported it
        if torch is not None and torch.cuda.is_available():
            return f"cuda:0 {torch.cuda.get_device_name(0)} (Ray GPU {','.join(map(str, gpus))})"
        return f"cuda (Ray GPU {','.join(map(str, gpus))})"


def _gpu_ids() -> list[Any]:
    try:
        import ray

        return list(ray.get_gpu_ids()) if ray.is_initialized() else []
    except Exception:
        return []


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:
        return None


def actor_options(num_cpus: float, num_gpus: float) -> dict[str, Any]:
    """What each worker actor asks Ray for: ``num_cpus`` CPUs and ``num_gpus`` GPUs (1 on GPU
    nodes: Ray then gives the actor one device of its own, in ``CUDA_VISIBLE_DEVICES``), four
    threads (a prompt, and interrupt / free / ping while it runs), and no restart by Ray."""
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_concurrency": 4, "max_restarts": 0,
            "max_task_retries": 0}


def remote_runner(num_cpus: float, num_gpus: float) -> Any:
    """``PromptRunner`` as a Ray actor class with ``actor_options``. Ray does not restart it:
    the dispatcher notices its death, re-queues its prompt and starts another."""
    import ray

    return ray.remote(PromptRunner).options(**actor_options(num_cpus, num_gpus))
