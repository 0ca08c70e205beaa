"""What one request may make the server do: body sizes, JSON decoding, the memory a prompt may ask for.

Every bound is a server flag (``latentgraph_server.config``) and is checked before the
work it limits: a JSON body is refused from its ``Content-Length`` or while it streams in,
not after it was buffered; a large body is decoded on a worker thread so other clients
are not stalled; the per-prompt memory limit comes from what the machine (or its cgroup)
can give, minus a reserve.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from latentgraph_server import json_text
from latentgraph_server.errors import BadRequest
from latentgraph_server.system_info import memory

# Bodies up to this size are decoded on the event loop: a thread hop costs more than that.
# Larger ones are decoded on a thread, by json_text.loads (which also yields the GIL).
_DECODE_INLINE_BYTES = 64 * 1024
_CHUNK = 64 * 1024
# Content types a browser may send cross-site without a preflight; a JSON route accepts
# none of them but x-www-form-urlencoded, which Python's urllib sends by default (ComfyUI's
# own API examples post that way) and which the origin checks cover.
_REFUSED_JSON_TYPES = ("text/plain", "multipart/form-data")
# The application's --max-json-body, which read_json reads.
MAX_JSON_BODY = web.AppKey("latentgraph_max_json_body", int)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refusing (413) one over ``limit`` bytes without reading it all."""
    if request.content_length is not None and request.content_length > limit:
        raise BadRequest(f"the body is larger than the limit of {limit} bytes", "body_too_large", 413)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        total += len(chunk)
        if total > limit:
            raise BadRequest(f"the body is larger than the limit of {limit} bytes", "body_too_large", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(raw: bytes) -> Any:
    try:
        return json_text.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", "invalid_json") from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (Python's int limit)
        raise BadRequest(f"the body cannot be decoded: {exc}", "invalid_json") from exc


def browser_same_origin(request: web.Request) -> bool:
    """Whether the browser itself says the request comes from this server's own pages
    (``Sec-Fetch-Site: same-origin``, which no page can forge)."""
    return request.headers.get("Sec-Fetch-Site", "").lower() == "same-origin"


async def read_json(request: web.Request, *, allow_empty: bool = False, text_from_own_pages: bool = False) -> Any:
    """The body decoded as JSON: 415 for a form or text content type, 413 over the app's
    ``MAX_JSON_BODY`` (--max-json-body), 400 when it is not JSON. Large bodies are decoded
    off the event loop. ``allow_empty``: an empty body reads as ``{}``. ``text_from_own_pages``
    accepts ``text/plain`` from the server's own pages (the official frontend posts settings
    without a Content-Type, which fetch sends as text/plain): the CSRF concern is other sites'
    pages, and the browser marks those."""
    if text_from_own_pages and request.content_type == "text/plain" and browser_same_origin(request):
        pass
    elif request.content_type in _REFUSED_JSON_TYPES:
        raise BadRequest(f"this route takes a JSON body (application/json), not {request.content_type}",
                         "unsupported_media_type", 415)
    limit = request.app[MAX_JSON_BODY]
    raw = await read_body(request, limit)
    if allow_empty and not raw.strip():
        return {}
    if len(raw) > _DECODE_INLINE_BYTES:
        return await asyncio.to_thread(_decode, raw)
    return _decode(raw)


def json_size_over(value: Any, limit: int) -> bool:
    """Whether ``value`` written as JSON would take more than ``limit`` bytes (about: string
    escapes are not counted). A walk in Python, stopping once over, so that measuring a
    large value neither holds the GIL for long nor builds its text."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, dict):
            total += 2 + len(item)
            for key, inner in item.items():
                total += len(str(key)) + 3
                stack.append(inner)
        elif isinstance(item, list):
            total += 2 + len(item)
            stack.extend(item)
        else:
            total += 24 if isinstance(item, float) else len(str(item)) if isinstance(item, int) else 5
        if total > limit:
            return True
    return False


def cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup"),
                        membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """The memory limit of this process's cgroup (v2 or v1) in bytes, or None when unlimited.

    ``root`` is where cgroups are mounted and ``membership`` the process's cgroup list.
    """
    candidates = []
    try:
        for line in membership.read_text().splitlines():
            _id, controllers, relative = line.split(":", 2)
            relative = relative.lstrip("/")
            if controllers == "":  # v2: one hierarchy
                candidates.append(root / relative / "memory.max")
            elif "memory" in controllers.split(","):  # v1: the memory controller's own hierarchy
                candidates.append(root / "memory" / relative / "memory.limit_in_bytes")
    except (OSError, ValueError):
        pass
    candidates += [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max" (v2) or a huge number (v1) mean no limit
            return int(text)
    return None


def prompt_memory_limit(reserve: int) -> int | None:
    """The largest memory estimate one prompt may have when none is configured: the
    machine's memory, or its cgroup's limit if lower, minus ``reserve`` bytes."""
    total, _free = memory()
    limits = [value for value in (total or None, cgroup_memory_limit()) if value]
    if not limits:
        return None
    return max(min(limits) - reserve, 0)
