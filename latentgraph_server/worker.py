"""The prompt worker: one thread that takes prompts from the queue and runs them.

The event loop never runs a node. Events go out through ``send`` / ``send_bytes``
(thread-safe callables, normally the hub's), addressed to the submitting client. The
terminal event of a prompt (``execution_success``, ``execution_error`` or
``execution_interrupted``) is held back until its history is written, then sent followed
by ``executing`` with ``node: null`` (which ComfyUI's host, not its executor, sends), so a
client that reacts to either by fetching ``/history`` always finds it.

The worker survives anything a node does: a node raising ``SystemExit`` or any other
``BaseException`` fails its prompt like any error. Should the thread die anyway, the
server's watchdog (``ensure_running``) records the prompt it held as failed, logs, and
starts a new thread; ``health()`` (shown in ``/system_stats``) counts the restarts. A
history write that fails (a full disk) is retried until it succeeds, so a prompt never
stays "running" while the server runs.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graph import Engine
from graph.executor import error_event, failed_status
from latentgraph_server.previews import ONLY_ASKERS, preview_frames, preview_policy
from latentgraph_server.progress_state import ProgressState
from latentgraph_server.queue_store import QueueItem, QueueStore
from nodes.save_websocket import IMAGE_EVENT

log = logging.getLogger("latentgraph.worker")

SendJson = Callable[[str | None, str, Any], None]
# (client_id, legacy frame, metadata frame, only to the connections that asked, droppable): Hub.send_preview
SendPreview = Callable[[str | None, bytes, bytes, bool, bool], None]

_TERMINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


@dataclass
class RunningPrompt:
    prompt_id: str
    client_id: str | None
    interrupt: threading.Event = field(default_factory=threading.Event)
    node: str | None = None


class PromptWorker:
    """Runs queued prompts one at a time on its own thread."""

    def __init__(self, store: QueueStore, engine: Engine, send: SendJson, send_preview: SendPreview,
                 on_queue_changed: Callable[[], None], preview_method: str = "none") -> None:
        self.store = store
        self.engine = engine
        self._send = send
        self._send_preview_frames = send_preview
        self.preview_method = preview_method  # the server's --preview-method (latentgraph_server/previews.py)
        # Called (on the worker thread) after a prompt leaves the queue.
        self.on_queue_changed = on_queue_changed
        self._free_request: tuple[bool, bool] | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._current: RunningPrompt | None = None
        self._thread = self._new_thread()
        self.restarts = 0
        self.last_failure: str | None = None

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._loop, name="latentgraph-worker", daemon=True)

    # -- control, from any thread ----------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def ensure_running(self) -> bool:
        """The watchdog: restarts the thread if it died; True when it had to."""
        if self._stopping.is_set() or self._thread.is_alive() or self._thread.ident is None:
            return False
        with self._lock:
            orphan, self._current = self._current, None
        self.restarts += 1
        self.last_failure = f"the worker thread died{' running prompt ' + orphan.prompt_id if orphan else ''}"
        log.error("%s; starting a new one (restart %d)", self.last_failure, self.restarts)
        if orphan is not None:
            error = error_event(orphan.prompt_id, "the worker thread died while running this prompt", "WorkerDied")
            self._record(orphan.prompt_id, {}, failed_status("execution_error", error), {})
            self._send(orphan.client_id, "execution_error", error)
            self._send(orphan.client_id, "executing", {"node": None, "display_node": None,
                                                       "prompt_id": orphan.prompt_id})
        self._thread = self._new_thread()
        self._thread.start()
        return True

    def health(self) -> dict[str, Any]:
        """What /system_stats shows of the worker."""
        running = self.current()
        return {"alive": self._thread.is_alive(), "restarts": self.restarts, "last_failure": self.last_failure,
                "running": running.prompt_id if running else None}

    def wake(self) -> None:
        """Tells the worker new prompts may be waiting."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.interrupt()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def current(self) -> RunningPrompt | None:
        with self._lock:
            return self._current

    def running_prompts(self) -> list[RunningPrompt]:
        """The prompts running now: one at most here (the Ray dispatcher has one per worker)."""
        running = self.current()
        return [running] if running is not None else []

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupts the running prompt (only if it is ``prompt_id``, when given)."""
        with self._lock:
            running = self._current
            if running is None or (prompt_id is not None and running.prompt_id != prompt_id):
                return False
            running.interrupt.set()
            return True

    def request_free(self, *, unload_models: bool, free_memory: bool) -> None:
        """Asks the worker to drop cached outputs and/or models once it is idle."""
        with self._lock:
            previous = self._free_request or (False, False)
            self._free_request = (previous[0] or unload_models, previous[1] or free_memory)
        self._wake.set()

    # -- the thread --------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            self._apply_free_request()
            try:
                item = self.store.claim_next()
            except Exception:
                log.exception("cannot read the queue")
                self._stopping.wait(1.0)
                continue
            if item is None:
                self._wake.wait()
                continue
            try:
                self._run(item)
            except BaseException:  # the worker must outlive any failure, SystemExit included
                log.exception("prompt %s failed outside the engine", item.prompt_id)

    def _apply_free_request(self) -> None:
        """POST /free, as ComfyUI: ``unload_models`` drops the loaded models (the cache's
        "models" pool), ``free_memory`` every cached output and memoised plan."""
        with self._lock:
            request, self._free_request = self._free_request, None
        if request is None:
            return
        unload_models, free_memory = request
        self.engine.free(unload_models=unload_models, free_memory=free_memory)

    def _run(self, item: QueueItem) -> None:
        running = RunningPrompt(item.prompt_id, item.client_id)
        with self._lock:
            self._current = running
        held: list[tuple[str, dict[str, Any]]] = []
        progress = ProgressState(item.prompt_id)

        def on_event(event: str, data: dict[str, Any]) -> None:
            if event == "preview":
                self._send_preview(item, data)
                return
            if event == IMAGE_EVENT:  # SaveImageWebsocket: always to the prompt's client, as in ComfyUI
                frames = preview_frames(data, png=True)
                if frames is not None and item.client_id is not None:
                    self._send_preview_frames(item.client_id, *frames, False, False)
                return
            if event in _TERMINAL_EVENTS:
                held.append((event, data))
                return
            if event == "executing":
                running.node = data.get("node")
            self._send(item.client_id, event, data)
            state = progress.update(event, data)
            if state is not None:
                self._send(item.client_id, "progress_state", state)

        try:
            outputs, status, meta = self._execute(item, running, on_event)
            self._record(item.prompt_id, outputs, status, meta)
        finally:
            with self._lock:
                self._current = None
        if not status.get("completed"):
            self.engine.release()  # what a failed prompt allocated is not kept
        last_state = progress.close(held)  # a failed node is marked "error"
        if last_state is not None:
            self._send(item.client_id, "progress_state", last_state)
        # As in ComfyUI: execution_success/_error/_interrupted, then `executing` with node null last
        # (sent by the host, as ComfyUI's prompt worker does): the signal clients take as "done".
        for event, data in held:
            self._send(item.client_id, event, data)
        self._send(item.client_id, "executing", {"node": None, "display_node": None, "prompt_id": item.prompt_id})
        self.on_queue_changed()

    def _execute(self, item: QueueItem, running: RunningPrompt,
                 on_event: Callable[[str, dict[str, Any]], None]) -> tuple[dict, dict, dict]:
        try:
            # Prepared when it was posted; prepared again only if queued before a restart.
            checked = self.engine.take(item.prompt_id) or self.engine.prepare(item.prompt,
                                                                              item.outputs_to_execute or None)
            if not checked.ok:
                # Valid when queued, but not after a restart (e.g. a model file was removed).
                message = (checked.error or {}).get("message", "the prompt is no longer valid")
                return self._failure(item, on_event, message, "ValidationError")
            result = self.engine.execute(checked.plan, prompt_id=item.prompt_id, on_event=on_event,
                                         interrupt=running.interrupt, extra_data=item.extra_data)
        except BaseException as exc:  # SystemExit from a node must not end the worker
            return self._failure(item, on_event, f"{type(exc).__name__}: {exc}", type(exc).__name__,
                                 [traceback.format_exc()])
        status = {"status_str": "success" if result.status == "success" else "error",
                  "completed": result.status == "success", "messages": result.messages}
        meta = {node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None,
                          "real_node_id": node_id} for node_id in result.outputs}
        return result.outputs, status, meta

    def _record(self, prompt_id: str, outputs: dict, status: dict, meta: dict) -> bool:
        """Writes a prompt's history, retrying while the database fails (a full disk):
        the result is kept until it is stored. False only if the server stops first."""
        delay = 0.5
        while True:
            try:
                self.store.finish(prompt_id, outputs, status, meta)
                return True
            except sqlite3.Error as exc:
                log.error("cannot record prompt %s (%s); retrying in %.1f s", prompt_id, exc, delay)
            if self._stopping.wait(delay):
                return False
            delay = min(delay * 2, 10.0)

    def _failure(self, item: QueueItem, on_event: Callable[[str, dict[str, Any]], None], message: str,
                 kind: str, trace: list[str] | None = None) -> tuple[dict, dict, dict]:
        error = error_event(item.prompt_id, message, kind, trace=trace)
        on_event("execution_error", error)
        return {}, failed_status("execution_error", error), {}

    def _send_preview(self, item: QueueItem, data: dict[str, Any]) -> None:
        """A sampler's preview to the prompt's client, if anyone there is to get it."""
        policy = preview_policy(item.extra_data, self.preview_method)
        if policy == "none" or item.client_id is None:
            return
        frames = preview_frames(data)
        if frames is not None:
            self._send_preview_frames(item.client_id, *frames, policy == ONLY_ASKERS, True)
