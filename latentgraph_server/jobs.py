"""``/jobs``: the queue and the history as one list of jobs, as ComfyUI's ``/api/jobs``.

The official frontend builds its queue counter, job panel and assets gallery from this
route alone (not from ``/queue`` or ``/history``):

- ``GET /jobs?status=in_progress,pending&limit=200&offset=0`` answers
  ``{"jobs": [...], "pagination": {"offset", "limit", "total", "has_more"}}``;
  ``status`` filters (``pending``, ``in_progress``, ``completed``, ``failed``, and the
  frontend's ``cancelled``, which ComfyUI never reports: an interrupted prompt is
  ``failed``), ``workflow_id`` keeps the jobs of one editor workflow, ``sort_by``
  (``created_at`` or ``execution_duration``) and ``sort_order`` (``desc`` by default) order them.
- ``GET /jobs/{id}``: one job with its ``outputs``, ``execution_status`` and ``workflow``
  (``{"prompt", "extra_data"}``), or 404.
- ``POST /jobs/{id}/cancel`` and ``POST /jobs/cancel`` ``{"job_ids": [...]}`` (the frontend's
  cancel buttons): a pending job leaves the queue, the running one is interrupted, a
  finished or unknown one is left alone; answers ``{"cancelled": [ids acted on]}``.

A job is ``{"id", "status", "priority", "create_time", "outputs_count", "workflow_id"}``
plus, once finished, ``execution_start_time``, ``execution_end_time``, ``execution_error``
and ``preview_output`` (its first image, preferring the output folder); keys without a
value are left out, as ComfyUI does. The frontend validates every job strictly (a job it
cannot parse empties the whole panel), so stored errors are normalised to its schema.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from latentgraph_server.openapi import Route
from latentgraph_server.queue_store import QueueItem, QueueStore, shown_number
from latentgraph_server.request_bounds import read_json

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
SORT_KEYS = ("created_at", "execution_duration")
MAX_LIMIT = 100_000
STATES = {"running": "in_progress", "pending": "pending"}
log = logging.getLogger("latentgraph.jobs")
# Output kinds the frontend can show as a job's preview (ComfyUI's list).
PREVIEWABLE = frozenset({"images", "video", "audio"})
_END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")

ROUTES = [
    Route("GET", "/jobs", "list", "Queue and history as jobs",
          query=("status", "workflow_id", "sort_by", "sort_order", "limit", "offset")),
    Route("GET", "/jobs/{job_id}", "get", "One job with its outputs and workflow", responses={"404": "no such job"}),
    Route("POST", "/jobs/{job_id}/cancel", "cancel", "Cancel a job: dequeue it, or interrupt it when running"),
    Route("POST", "/jobs/cancel", "cancel_many", "Cancel jobs ({\"job_ids\": [...]})", body="json",
          responses={"400": "bad body"}),
]


def _bad(message: str) -> web.HTTPBadRequest:
    # HTTP errors become JSON error bodies in the server's error middleware.
    return web.HTTPBadRequest(text=message)


def _query_int(request: web.Request, name: str, default: int | None, low: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if len(raw) > 12 or not raw.lstrip("-").isdigit():
        raise _bad(f"{name} must be an integer")
    value = int(raw)
    if not low <= value <= MAX_LIMIT * 1000:
        raise _bad(f"{name} must be between {low} and {MAX_LIMIT * 1000}")
    return value


def _checked(create_time: Any, workflow_id: Any) -> tuple[Any, Any]:
    return (create_time if isinstance(create_time, (int, float)) and not isinstance(create_time, bool) else None,
            workflow_id if isinstance(workflow_id, str) else None)


def _metadata(extra_data: dict[str, Any]) -> tuple[Any, Any]:
    """(create_time, workflow_id) from a prompt's extra_data, tolerating any shape."""
    pnginfo = extra_data.get("extra_pnginfo")
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    return _checked(extra_data.get("create_time"), workflow.get("id") if isinstance(workflow, dict) else None)


def _pruned(job: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in job.items() if value is not None}


def queue_job(item: QueueItem, status: str) -> dict[str, Any]:
    create_time, workflow_id = _metadata(item.extra_data)
    return _pruned({"id": item.prompt_id, "status": status, "priority": shown_number(item.number),
                    "create_time": create_time or 0, "outputs_count": 0, "workflow_id": workflow_id})


def _error_for_frontend(error: dict[str, Any]) -> dict[str, Any]:
    """A stored execution_error in the frontend's schema: strings where it wants strings
    (a prompt that failed before any node ran has no node id)."""
    traceback = error.get("traceback")
    return {**error,
            "node_id": str(error.get("node_id") or ""), "node_type": str(error.get("node_type") or ""),
            "exception_message": str(error.get("exception_message") or ""),
            "exception_type": str(error.get("exception_type") or ""),
            "traceback": [str(line) for line in traceback] if isinstance(traceback, list) else []}


def outputs_summary(outputs: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """How many output items a prompt made, and the one to show as its preview."""
    count = 0
    preview: dict[str, Any] | None = None
    fallback: dict[str, Any] | None = None
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            continue
        for media_type, items in node_outputs.items():
            if not isinstance(items, list):
                continue  # e.g. "animated": a flag, not items
            for item in items:
                if not isinstance(item, dict):
                    continue
                count += 1
                if preview is None and media_type in PREVIEWABLE:
                    shown = {**item, "nodeId": node_id, "mediaType": media_type}
                    if item.get("type") == "output":
                        preview = shown
                    elif fallback is None:
                        fallback = shown
    return count, preview or fallback


def history_job(prompt_id: str, entry: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    number, _, prompt, extra_data, _ = entry["prompt"]
    job = finished_job(prompt_id, number, *_metadata(extra_data), entry.get("outputs") or {}, entry.get("status") or {})
    if detail:
        job.update(outputs=entry.get("outputs") or {}, execution_status=entry.get("status") or {},
                   workflow={"prompt": prompt, "extra_data": extra_data})
    return job


def finished_job(prompt_id: str, number: float, create_time: Any, workflow_id: Any, outputs: dict[str, Any],
                 status_info: dict[str, Any]) -> dict[str, Any]:
    failed = status_info.get("status_str") == "error"
    start = end = error = None
    for message in status_info.get("messages") or ():
        if not (isinstance(message, list) and len(message) >= 2 and isinstance(message[1], dict)):
            continue
        event, data = message[0], message[1]
        if event == "execution_start":
            start = data.get("timestamp")
        elif event in _END_EVENTS:
            end = data.get("timestamp")
            if event == "execution_error":
                error = _error_for_frontend(data)
    count, preview = outputs_summary(outputs)
    return _pruned({"id": prompt_id, "status": "failed" if failed else "completed", "priority": shown_number(number),
                    # a prompt stored before create_time was recorded: when it started is the best we know
                    "create_time": create_time or start or 0,
                    "execution_start_time": start, "execution_end_time": end, "execution_error": error,
                    "outputs_count": count, "preview_output": preview, "workflow_id": workflow_id})


def row_job(row: tuple[Any, ...]) -> dict[str, Any] | None:
    """A job from ``QueueStore.job_rows``; None for a row whose stored JSON is damaged."""
    state, number, prompt_id, create_time, workflow_id, outputs, status = row
    create_time, workflow_id = _checked(create_time, workflow_id)
    if state in STATES:
        return _pruned({"id": prompt_id, "status": STATES[state], "priority": shown_number(number),
                        "create_time": create_time or 0, "outputs_count": 0, "workflow_id": workflow_id})
    try:
        outputs, status = json.loads(outputs or "{}"), json.loads(status or "{}")
    except ValueError as exc:
        log.error("skipped unreadable stored prompt %r: %s", prompt_id, exc)
        return None
    if not isinstance(outputs, dict) or not isinstance(status, dict):
        return None
    return finished_job(prompt_id, number, create_time, workflow_id, outputs, status)


def _duration(job: dict[str, Any]) -> float:
    start, end = job.get("execution_start_time"), job.get("execution_end_time")
    return end - start if isinstance(start, (int, float)) and isinstance(end, (int, float)) else 0


class Jobs:
    """Route handlers for ``/jobs`` (see the module docstring).

    ``interrupt(prompt_id)`` stops that prompt if it is running (PromptWorker.interrupt);
    ``queue_changed()`` tells clients the queue changed (the server's status broadcast).
    """

    def __init__(self, store: QueueStore, interrupt: Callable[[str], bool] | None = None,
                 queue_changed: Callable[[], None] | None = None) -> None:
        self.store = store
        self._interrupt = interrupt or (lambda prompt_id: False)
        self._queue_changed = queue_changed or (lambda: None)

    def _all(self, statuses: set[str]) -> list[dict[str, Any]]:
        jobs = (row_job(row) for row in self.store.job_rows())
        return [job for job in jobs if job is not None and job["status"] in statuses]

    async def list(self, request: web.Request) -> web.Response:
        raw_status = request.query.get("status")
        statuses = set(STATUSES)
        if raw_status:
            statuses = {part.strip() for part in raw_status.split(",") if part.strip()}
            unknown = sorted(statuses - set(STATUSES))
            if unknown:
                raise _bad(f"unknown job status {unknown[0][:40]!r}; known: {', '.join(STATUSES)}")
        sort_by = request.query.get("sort_by", "created_at")
        if sort_by not in SORT_KEYS:
            raise _bad(f"sort_by must be one of {', '.join(SORT_KEYS)}")
        sort_order = request.query.get("sort_order", "desc")
        if sort_order not in ("asc", "desc"):
            raise _bad("sort_order must be asc or desc")
        limit = _query_int(request, "limit", None, 1)
        offset = _query_int(request, "offset", 0, 0) or 0
        workflow_id = request.query.get("workflow_id")

        jobs = await asyncio.to_thread(self._all, statuses)
        if workflow_id:
            jobs = [job for job in jobs if job.get("workflow_id") == workflow_id]
        key = _duration if sort_by == "execution_duration" else (lambda job: job.get("create_time") or 0)
        jobs.sort(key=key, reverse=sort_order == "desc")
        total = len(jobs)
        page = jobs[offset:] if limit is None else jobs[offset:offset + limit]
        return web.json_response({"jobs": page, "pagination": {
            "offset": offset, "limit": limit if limit is not None else total, "total": total,
            "has_more": offset + len(page) < total}})

    async def get(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["job_id"]
        entry = await asyncio.to_thread(self.store.history_item, prompt_id)
        if prompt_id in entry:
            return web.json_response(history_job(prompt_id, entry[prompt_id], detail=True))
        for status, items in (("in_progress", self.store.running), ("pending", self.store.pending)):
            for item in await asyncio.to_thread(items):
                if item.prompt_id == prompt_id:
                    return web.json_response(queue_job(item, status))
        raise web.HTTPNotFound(text=f"no job {prompt_id[:80]!r}")

    def _cancel(self, job_ids: list[str]) -> list[str]:
        cancelled = [job_id for job_id in job_ids if self.store.delete_pending([job_id])]
        cancelled += [job_id for job_id in job_ids if job_id not in cancelled and self._interrupt(job_id)]
        return cancelled

    async def cancel(self, request: web.Request) -> web.Response:
        cancelled = await asyncio.to_thread(self._cancel, [request.match_info["job_id"]])
        self._queue_changed()
        return web.json_response({"cancelled": cancelled})

    async def cancel_many(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        job_ids = body.get("job_ids") if isinstance(body, dict) else None
        if not isinstance(job_ids, list) or not all(isinstance(i, str) for i in job_ids) or len(job_ids) > 10_000:
            raise _bad('the body must be {"job_ids": ["...", ...]}')
        cancelled = await asyncio.to_thread(self._cancel, job_ids)
        self._queue_changed()
        return web.json_response({"cancelled": cancelled})
