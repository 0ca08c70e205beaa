"""One Ray worker as the front server sees it (used by ``latentgraph_server.ray_dispatch``).

``RayLane`` is the local ``PromptWorker`` with ``_execute`` pointed at a Ray actor
(``latentgraph_server.ray_workers.PromptRunner``): the prompt, with the input files it names,
goes to the actor; the actor's stream of messages comes back in order. Files are written to
the front server's output and temp folders (``latentgraph_server.ray_files``) before the
events that name them are passed on, through the local worker's own event handling, to the
websocket clients. A stream that fails because the actor is gone raises ``WorkerLost``,
after removing the files this run had shipped but not announced: the dispatcher re-queues
the prompt.

What the client of a re-run prompt sees: the lost run's events up to the loss (nothing
terminal among them), then the new run's, from a fresh ``execution_start`` (ComfyUI's
frontend takes a second one for the same prompt id as a restart of its progress), except
the ``executed`` events of nodes whose ``executed`` the lost run had already sent: the
client holds those outputs, their files stay, the new run's copies are dropped and the
history names the files the client was given (``ray_files.Announced``). Each node's
``executed`` reaches the client once, and every file an event names exists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import exceptions as ray_errors

from graph import Engine
from latentgraph_server.queue_store import QueueItem, QueueStore
from latentgraph_server.ray_files import (
    Announced,
    FileNames,
    InputTracker,
    history_outputs,
    named_files,
    place_file,
    prompt_inputs,
)
from latentgraph_server.ray_routing import Candidate
from latentgraph_server.worker import PromptWorker, RunningPrompt, SendJson, SendPreview

log = logging.getLogger("latentgraph.ray")

# What a lost worker looks like from the stream it was sending.
LOST = (ray_errors.RayActorError, ray_errors.WorkerCrashedError, ray_errors.ObjectLostError,
        ray_errors.NodeDiedError)


class WorkerLost(Exception):
    """The worker running a prompt went away; ``started``: it had sent some of its events."""

    def __init__(self, reason: str, started: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.started = started


class RayLane(PromptWorker):
    """One Ray worker, seen from the front server."""

    def __init__(self, name: str, actor: Any, store: QueueStore, engine: Engine, send: SendJson,
                 send_preview: SendPreview, on_queue_changed: Callable[[], None], preview_method: str,
                 announced: Announced | None = None) -> None:
        # ``engine`` is the front server's: this lane runs nothing with it (the worker prepares
        # and runs the prompt), it only reads its folders and drops the plan it held.
        super().__init__(store, engine, send, send_preview, on_queue_changed, preview_method)
        self.name = name
        self.actor = actor
        self.state = "starting"  # starting -> idle <-> busy -> dead
        self.info: dict[str, Any] = {}
        self.idle_since = time.monotonic()
        self.ready_ref: Any = actor.info.remote()
        self.ping_ref: Any = None
        self.ping_sent = 0.0
        folders = engine.folders
        self.roots = {"output": Path(folders.output), "temp": Path(folders.temp)}
        self.inputs = InputTracker()
        self.names = FileNames()
        self.announced = announced if announced is not None else Announced()  # shared by all lanes

    def candidate(self) -> Candidate:
        return Candidate(self.name, set(self.info.get("models", {})), int(self.info.get("cached_bytes", 0)),
                         self.idle_since)

    def describe(self) -> dict[str, Any]:
        running = self.current()
        return {"name": self.name, "state": self.state, "device": self.info.get("device"),
                "host": self.info.get("host"), "node_id": self.info.get("node_id"), "pid": self.info.get("pid"),
                "loaded_models": sorted(self.info.get("models", {}).values()),
                "cached_bytes": self.info.get("cached_bytes", 0), "prompts_run": self.info.get("prompts_run", 0),
                "prompt": running.prompt_id if running else None, "node": running.node if running else None}

    # -- PromptWorker, pointed at the actor ------------------------------------------------

    def interrupt(self, prompt_id: str | None = None) -> bool:
        running = self.current()
        if not super().interrupt(prompt_id) or running is None:
            return False
        self.actor.interrupt.remote(running.prompt_id)
        return True

    def request_free(self, *, unload_models: bool, free_memory: bool) -> None:
        if self.state != "dead":
            self.actor.free.remote(unload_models, free_memory)

    def _release_memory(self) -> None:
        """Nothing of a prompt is held here; its worker frees its own memory."""

    def _execute(self, item: QueueItem, running: RunningPrompt,
                 on_event: Callable[[str, dict[str, Any]], None]) -> tuple[dict, dict, dict]:
        placed: list[Path] = []
        started = False
        earlier = self.announced.get(item.prompt_id)  # node -> `executed` a lost run already sent
        sent: dict[str, dict[str, Any]] = {}  # node -> `executed` this run sent
        payload = {"number": item.number, "prompt_id": item.prompt_id, "prompt": item.prompt,
                   "extra_data": item.extra_data, "outputs_to_execute": item.outputs_to_execute,
                   "client_id": item.client_id}
        self.engine.take(item.prompt_id)  # the worker prepares it in its own process
        try:
            files = self.inputs.to_send(prompt_inputs(item.prompt, Path(self.engine.folders.input)))
            stream = self.actor.run.remote(payload, files)
            if running.interrupt.is_set():  # interrupted before the actor knew of the prompt
                self.actor.interrupt.remote(item.prompt_id)
            for ref in stream:
                for message in ray.get(ref):
                    kind = message[0]
                    if kind == "file":
                        _, folder_kind, subfolder, name, data = message
                        target = place_file(self.roots, folder_kind, subfolder, name, data)
                        if target is not None:
                            self.names.set(folder_kind, subfolder, name, target.name)
                            placed.append(target)
                    elif kind == "event":
                        started = True
                        event, data = message[1], self.names.rewrite(message[2])
                        if event == "executed":
                            node = str(data.get("node"))
                            if node in earlier:  # the client has this node's outputs: keep those
                                _remove(named_files(data, self.roots), placed)
                                continue
                            sent[node] = data
                        on_event(event, data)
                    elif kind == "done":
                        _, outputs, status, meta, self.info = message
                        outputs, meta = self._with_announced(item.prompt_id, self.names.rewrite(outputs), meta)
                        return outputs, self.names.rewrite(status), meta
            raise self._lost(item.prompt_id, placed, sent, "the worker's stream ended without a result", started)
        except LOST as exc:
            detail = str(exc).splitlines()[0] if str(exc) else ""
            raise self._lost(item.prompt_id, placed, sent, f"{type(exc).__name__}: {detail}"
                             f"{'' if started else ' (before its first event)'}", started) from exc
        except WorkerLost:
            raise
        except Exception as exc:  # a failure on this side (a file that cannot be written, ...)
            log.exception("prompt %s failed on the front server", item.prompt_id)
            outputs, status, meta = self._failure(item, on_event, f"{type(exc).__name__}: {exc}", type(exc).__name__)
            outputs, meta = self._with_announced(item.prompt_id, outputs, meta)
            return outputs, status, meta

    def _lost(self, prompt_id: str, placed: list[Path], sent: dict[str, dict[str, Any]], reason: str,
              started: bool) -> WorkerLost:
        """Cleans up after a lost run: the run that replaces it ships its own files, so this
        one's are removed, except those named by an ``executed`` the client already got."""
        self.inputs.forget()
        _remove(set(placed) - named_files(list(sent.values()), self.roots), placed)
        self.announced.add(prompt_id, sent)
        return WorkerLost(reason, started)

    def _with_announced(self, prompt_id: str, outputs: dict, meta: dict) -> tuple[dict, dict]:
        """A prompt's outputs and meta, with those its lost runs announced (and forgotten here)."""
        announced_outputs, announced_meta = history_outputs(self.announced.pop(prompt_id))
        return {**outputs, **announced_outputs}, {**meta, **announced_meta}


def _remove(paths: set[Path], placed: list[Path]) -> None:
    """Deletes those of ``paths`` this run placed (never a file another prompt owns)."""
    for path in [path for path in placed if path in paths]:
        path.unlink(missing_ok=True)
        placed.remove(path)
