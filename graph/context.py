"""What a running node can see: folders, the prompt, progress reporting and interrupts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EventCallback = Callable[[str, dict[str, Any]], None]


class Interrupted(Exception):
    """Raised inside a run when an interrupt was requested; the prompt stops cleanly."""


class NodeFailure(Exception):
    """A node raised; carries the node id so the error event can name it."""

    def __init__(self, node_id: str, original: BaseException) -> None:
        super().__init__(str(original))
        self.node_id = node_id
        self.original = original


@dataclass
class Folders:
    """The input, output and temp folders (as in ComfyUI). Nodes never write elsewhere."""

    input: Path = Path("input")
    output: Path = Path("output")
    temp: Path = Path("temp")

    @classmethod
    def under(cls, root: str | Path) -> Folders:
        root = Path(root)
        return cls(root / "input", root / "output", root / "temp")


@dataclass
class ExecutionContext:
    """Per-prompt state handed to nodes as ``self.context``.

    ``runtime`` is the application's object the engine only passes along (Latentgraph's:
    ``nodes.sd.runtime.Runtime``: model folders, devices, precision, GPU memory).
    """

    prompt_id: str
    emit: EventCallback
    interrupt: threading.Event
    folders: Folders = field(default_factory=Folders)
    workflow: Any = None  # the running graph.workflow.Workflow
    extra_data: dict[str, Any] = field(default_factory=dict)
    runtime: Any = None
    node_id: str | None = None
    _prompt: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def prompt(self) -> dict[str, Any]:
        """The running workflow in API format (e.g. for PNG metadata), built when asked for."""
        if self._prompt is None:
            self._prompt = self.workflow.to_api() if self.workflow is not None else {}
        return self._prompt

    def check_interrupt(self) -> None:
        """Raises ``Interrupted`` if an interrupt was requested."""
        if self.interrupt.is_set():
            raise Interrupted()

    def progress(self, value: int, total: int, preview: Any = None) -> None:
        """Reports step ``value`` of ``total`` for the running node and honours interrupts.

        ``preview`` is an optional small image (a PIL image) sent to clients as a live
        preview. Call it at every step of long work, such as each sampler step.
        """
        self.check_interrupt()
        self.emit("progress", {"value": value, "max": total, "node": self.node_id, "prompt_id": self.prompt_id})
        if preview is not None:
            self.emit("preview", {"image": preview, "node": self.node_id, "prompt_id": self.prompt_id})


def timestamp_ms() -> int:
    return int(time.time() * 1000)
