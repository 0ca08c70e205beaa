"""The engine object: one per process, built by the CLI or the server.

It owns the node catalogue (``registry``), the memo of prepared plans (``memo``), the
output cache (``cache``), the application's ``runtime`` and the executor, built on the
first prompt (that is when the runtime imports torch). A prompt is prepared once: the
server prepares it when it is posted, keeps the result with ``hold`` while it waits in
the queue, and the worker ``take``s it back to run; only a prompt queued before a restart
is prepared again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from graph.cache import OutputCache
from graph.context import EventCallback, Folders
from graph.executor import ExecutionResult, Executor
from graph.limits import PromptLimits
from graph.memo import PreparedMemo
from graph.plan import ExecutionPlan
from graph.preparation import prepare
from graph.registry import NodeRegistry
from graph.validate import ValidationResult

# Prepared prompts kept between POST /prompt and their run; a queue longer than this
# prepares the rest again when they run (correct, only slower).
MAX_HELD_PROMPTS = 1000


class Runtime(Protocol):
    """What the engine asks of the application's runtime (``nodes.sd.runtime.Runtime``).
    Nodes see the whole object as ``context.runtime``; the engine only calls these."""

    folders: Folders

    def start(self) -> None:
        """Heavy set-up before the first prompt runs (imports torch, finds the GPU)."""

    def run_context(self) -> AbstractContextManager:
        """What every prompt runs under (e.g. ``torch.inference_mode()``)."""
        ...

    def release(self, *, unload_models: bool = False) -> None:
        """Returns memory nothing refers to any more (after ``free`` or a failed prompt)."""


class Engine:
    """Registry, prepared-plan memo, output cache, runtime and executor of one process."""

    def __init__(self, registry: NodeRegistry, runtime: Runtime | None = None, *,
                 cache: OutputCache | None = None, folders: Folders | None = None,
                 on_start: Callable[[], None] | None = None) -> None:
        self.registry = registry
        self.runtime = runtime
        self.cache = cache if cache is not None else OutputCache()
        self.folders = folders or getattr(runtime, "folders", None) or Folders()
        self.memo = PreparedMemo()
        self._on_start = on_start  # e.g. the server installing preview decoders
        self._executor: Executor | None = None
        self._held: OrderedDict[str, ValidationResult] = OrderedDict()
        self._lock = threading.Lock()

    # -- preparing ----------------------------------------------------------------------

    def prepare(self, document: Any, targets: list[str] | None = None, *, limits: PromptLimits | None = None,
                cancel: threading.Event | None = None, memo: bool = True) -> ValidationResult:
        """Parses, validates and plans ``document`` (see ``graph.prepare``), memoised by content."""
        return prepare(document, self.registry, targets, self.runtime, memo=self.memo if memo else None,
                       limits=limits, cancel=cancel)

    def hold(self, prompt_id: str, prepared: ValidationResult) -> None:
        """Keeps a queued prompt's prepared plan for the worker (the oldest beyond a bound go)."""
        with self._lock:
            self._held[prompt_id] = prepared
            while len(self._held) > MAX_HELD_PROMPTS:
                self._held.popitem(last=False)

    def take(self, prompt_id: str) -> ValidationResult | None:
        """The prepared plan ``hold`` kept for ``prompt_id`` (once), or None."""
        with self._lock:
            return self._held.pop(prompt_id, None)

    def object_info(self) -> dict[str, Any]:
        """The ``GET /object_info`` document, combo choices read through the runtime."""
        return self.registry.object_info(self.runtime)

    # -- running ------------------------------------------------------------------------

    def executor(self) -> Executor:
        """The executor, made (and the runtime started) on first use."""
        if self._executor is None:
            if self.runtime is not None:
                self.runtime.start()
            if self._on_start is not None:
                self._on_start()
            run_context = self.runtime.run_context if self.runtime is not None else nullcontext
            self._executor = Executor(self.cache, folders=self.folders, runtime=self.runtime, run_context=run_context)
        return self._executor

    def execute(self, plan: ExecutionPlan, *, prompt_id: str | None = None, on_event: EventCallback | None = None,
                interrupt: threading.Event | None = None, extra_data: dict[str, Any] | None = None) -> ExecutionResult:
        """Runs a prepared plan (``Executor.execute``)."""
        return self.executor().execute(plan, prompt_id=prompt_id, on_event=on_event, interrupt=interrupt,
                                       extra_data=extra_data)

    def free(self, *, unload_models: bool, free_memory: bool) -> None:
        """POST /free, as ComfyUI: ``unload_models`` drops the loaded models (the cache's
        "models" pool), ``free_memory`` every cached output and memoised plan."""
        if free_memory:
            self.cache.clear()
            self.memo.clear()
        elif unload_models:
            self.cache.drop_pool("models")
        self.release(unload_models=unload_models)

    def release(self, *, unload_models: bool = False) -> None:
        """Hands back memory nothing refers to any more (the runtime's job)."""
        if self.runtime is not None:
            self.runtime.release(unload_models=unload_models)


__all__ = ["MAX_HELD_PROMPTS", "Engine", "Runtime"]
