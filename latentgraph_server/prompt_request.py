"""POST /prompt's body: its fields checked (``parse_prompt_request``) and, once the engine
has prepared the document, the row the queue stores (``PromptRequest.queue_row``)."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from graph import is_ui_format
from latentgraph_server.errors import BadRequest
from latentgraph_server.request_bounds import json_size_over

MAX_ID_LENGTH = 256
# Queue numbers are stored as SQLite REALs: beyond 2**53 they would no longer be exact.
MAX_PROMPT_NUMBER = 2**53


@dataclass
class PromptRequest:
    """The fields of a POST /prompt body, checked (ComfyUI's names)."""

    document: Any
    prompt_id: str
    client_id: str | None
    extra_data: dict[str, Any]
    targets: list[str] | None
    number: float | None
    front: bool

    def queue_row(self, checked: Any) -> tuple[Any, dict[str, Any]]:
        """The prompt to queue once ``checked`` (its preparation) passed: the API-format
        prompt (a UI document as converted) and its extra_data, the client's plus
        ``create_time``, ``client_id`` and, for a UI document, the workflow for the PNGs."""
        ui_format = is_ui_format(self.document)
        extra_data = dict(self.extra_data)
        extra_data["create_time"] = int(time.time() * 1000)  # as ComfyUI: /jobs sorts and shows by it
        if self.client_id is not None:
            extra_data["client_id"] = self.client_id
        if ui_format:
            pnginfo = extra_data.get("extra_pnginfo")
            if pnginfo is None or isinstance(pnginfo, dict):
                extra_data["extra_pnginfo"] = {"workflow": self.document, **(pnginfo or {})}
        return (checked.plan.workflow.to_api() if ui_format else self.document), extra_data


def parse_prompt_request(body: dict[str, Any], max_extra_data: int) -> PromptRequest:
    """Checks a POST /prompt body; raises BadRequest naming the first bad field."""
    if "prompt" not in body or body["prompt"] is None:
        raise BadRequest("No prompt provided", "no_prompt")
    client_id = body.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or len(client_id) > MAX_ID_LENGTH):
        raise BadRequest("client_id must be a string")
    prompt_id = body.get("prompt_id") or str(uuid.uuid4())
    if not isinstance(prompt_id, str) or len(prompt_id) > MAX_ID_LENGTH:
        raise BadRequest("prompt_id must be a string")
    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        raise BadRequest("extra_data must be an object")
    # extra_data is stored with the prompt, written into every PNG and sent back by /queue and /history.
    if json_size_over(extra_data, max_extra_data):
        raise BadRequest(f"extra_data is larger than the limit of {max_extra_data} bytes (--max-extra-data)",
                         "extra_data_too_large", 413)
    targets = body.get("partial_execution_targets")
    if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)):
        raise BadRequest("partial_execution_targets must be a list of node ids")
    number = body.get("number")
    if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))
                               # abs() first: math.isfinite overflows on an int past float's range
                               or abs(number) > MAX_PROMPT_NUMBER or not math.isfinite(number)):
        raise BadRequest(f"number must be a number between -{MAX_PROMPT_NUMBER} and {MAX_PROMPT_NUMBER}")
    return PromptRequest(body["prompt"], prompt_id, client_id, extra_data, targets,
                         None if number is None else float(number), bool(body.get("front")))
