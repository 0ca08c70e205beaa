"""``progress_state`` websocket messages: every started node's state, as ComfyUI sends them.

The official frontend highlights the running node and draws its progress bar from these
(not from ``executing``/``progress`` alone). Each message carries the whole picture of the
prompt so far::

    {"prompt_id": P, "nodes": {node_id: {"value", "max", "state", "node_id", "prompt_id",
                                         "display_node_id", "parent_node_id", "real_node_id"}}}

with ``state`` ``running``, ``finished`` or ``error`` (ComfyUI's ``NodeState`` names in
comfy_execution/progress.py; nodes not yet started, its ``pending``, are left out, as
ComfyUI does). One is sent when a node starts, on each of its progress steps, and when it
ends; when the prompt ends, the node an ``execution_error`` names is marked ``error`` (its
progress kept where it stopped), which the official frontend keeps over later updates.
"""

from __future__ import annotations

from typing import Any


class ProgressState:
    """The node states of one running prompt, fed the executor's events."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self.nodes: dict[str, dict[str, Any]] = {}
        self._running: str | None = None

    def _entry(self, node_id: str) -> dict[str, Any]:
        entry = self.nodes.get(node_id)
        if entry is None:
            entry = self.nodes[node_id] = {
                "value": 0.0, "max": 1.0, "state": "running", "node_id": node_id, "prompt_id": self.prompt_id,
                # Subgraph nodes arrive flattened ("5:3") and are shown under that id, as ComfyUI's frontend sends them.
                "display_node_id": node_id, "parent_node_id": None, "real_node_id": node_id}
        return entry

    def _finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry["state"] = "finished"
        entry["value"] = entry["max"]

    def update(self, event: str, data: dict[str, Any]) -> dict[str, Any] | None:
        """The ``progress_state`` message to send after ``event``, or None."""
        node_id = data.get("node")
        if event == "executing":
            # A node without UI output sends no `executed`: the next start ends it.
            if self._running is not None and self._running != node_id:
                self._finish(self._running)
            self._running = node_id
            if node_id is None:
                return self.message()
            entry = self._entry(node_id)
            entry.update(state="running", value=0.0, max=1.0)
        elif event == "progress" and isinstance(node_id, str):
            entry = self._entry(node_id)
            entry.update(state="running", value=float(data.get("value", 0)), max=float(data.get("max", 1) or 1))
        elif event == "executed" and isinstance(node_id, str):
            self._finish(node_id)
            if self._running == node_id:
                self._running = None
        else:
            return None
        return self.message()

    def close(self, final_events: list[tuple[str, dict[str, Any]]] = ()) -> dict[str, Any] | None:
        """The last message, when the prompt ends with a node still marked running or with
        a failed node: ``final_events`` are its closing events (``execution_error`` names the
        node that failed). None when there is nothing left to tell."""
        failed = {data.get("node_id") for event, data in final_events
                  if event == "execution_error" and isinstance(data.get("node_id"), str)}
        for node_id in failed:
            self._entry(node_id)["state"] = "error"
        if self._running is not None and self._running not in failed:
            self._finish(self._running)
        elif self._running is None and not failed:
            return None
        self._running = None
        return self.message()

    def message(self) -> dict[str, Any]:
        return {"prompt_id": self.prompt_id, "nodes": {node_id: dict(entry) for node_id, entry in self.nodes.items()}}
