"""Every error answer of the server, in one shape: ComfyUI's
``{"error": {"type", "message", "details", "extra_info"}}`` (``/prompt`` and the core routes
add ``"node_errors": {}``, as ComfyUI's ``/prompt`` does).

Handlers raise :class:`BadRequest` (or aiohttp's ``HTTPException``) or answer
:func:`error_response` directly; :func:`error_middleware` turns whatever else escapes into
a JSON body too.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
from typing import Any

from aiohttp import web

log = logging.getLogger("latentgraph.server")

# The error type of an answer built from its status alone (uploads, /view, /userdata).
KINDS = {400: "bad_request", 403: "forbidden", 404: "not_found", 409: "exists", 413: "too_large",
         503: "storage_unavailable", 507: "insufficient_storage"}


class BadRequest(Exception):
    """A request refused with ``status`` and error type ``kind``; the middleware answers it."""

    def __init__(self, message: str, kind: str = "invalid_request", status: int = 400) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


def error_response(status: int, message: str, kind: str | None = None, *, node_errors: bool = False,
                   headers: dict[str, str] | None = None) -> web.Response:
    """The JSON error answer; ``kind`` defaults to the status's entry in :data:`KINDS`."""
    body: dict[str, Any] = {"error": {"type": kind or KINDS.get(status, "error"), "message": message,
                                      "details": "", "extra_info": {}}}
    if node_errors:
        body["node_errors"] = {}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure becomes a JSON body: 4xx for a bad request, 503/507 for storage faults,
    and a 500 without a traceback (which goes to the log) for anything unforeseen."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return error_response(exc.status, str(exc), exc.kind, node_errors=True)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return error_response(exc.status, exc.text or exc.reason, exc.reason.lower().replace(" ", "_"),
                              node_errors=True, headers=headers)
    except asyncio.CancelledError:
        raise
    except sqlite3.OperationalError as exc:
        log.error("the queue database failed on %s %s: %s", request.method, request.path, exc)
        return error_response(503, f"the queue database cannot be used now: {exc}", "storage_unavailable",
                              node_errors=True)
    except OSError as exc:
        log.error("storage failed on %s %s: %s", request.method, request.path, exc)
        status = 507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 503
        return error_response(status, f"cannot store or read: {exc.strerror or exc}", "storage_unavailable",
                              node_errors=True)
    except Exception:
        log.exception("unexpected failure on %s %s", request.method, request.path)
        return error_response(500, "the server failed on this request (see its log)", "internal_error",
                              node_errors=True)
