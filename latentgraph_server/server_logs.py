"""The server's log for the official frontend's log viewer, in ComfyUI's shapes.

- ``GET /internal/logs``: the recent log as one string;
- ``GET /internal/logs/raw``: ``{"entries": [{"t": time, "m": text}], "size": {"cols", "rows"}}``;
- ``PATCH /internal/logs/subscribe`` ``{"enabled": bool, "clientId": id}``: new entries then
  reach that client as ``logs`` websocket messages (``{"entries": [...], "size": ...}``).

The last ``MAX_ENTRIES`` records of the ``latentgraph`` loggers (and aiohttp's) are kept in
memory; nothing is written anywhere.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from latentgraph_server.openapi import Route
from latentgraph_server.request_bounds import read_json

MAX_ENTRIES = 1000
MAX_SUBSCRIBERS = 64
# The frontend's terminal takes this size; a server has no terminal of its own to report.
TERMINAL_SIZE = {"cols": 120, "rows": 40}
LOGGERS = ("latentgraph", "aiohttp.server", "graph")

SendJson = Callable[[str | None, str, Any], None]  # Hub.send_threadsafe

ROUTES = [
    Route("GET", "/internal/logs", "get_logs", "The server's recent log, as text"),
    Route("GET", "/internal/logs/raw", "get_raw", "The server's recent log entries"),
    Route("PATCH", "/internal/logs/subscribe", "subscribe", "Follow the log over the websocket",
          body="json", responses={"400": "bad body", "429": "too many followers"}),
]


class LogBuffer(logging.Handler):
    """Keeps recent records and forwards new ones to subscribed clients (any thread)."""

    def __init__(self, send: SendJson) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.entries: collections.deque[dict[str, str]] = collections.deque(maxlen=MAX_ENTRIES)
        self.subscribers: set[str] = set()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = {"t": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created)),
                     "m": self.format(record) + "\n"}
        except Exception:  # a record that cannot be formatted must not break the code that logged it
            return
        self.entries.append(entry)
        for client_id in list(self.subscribers):
            self._send(client_id, "logs", {"entries": [entry], "size": TERMINAL_SIZE})

    def attach(self) -> None:
        for name in LOGGERS:
            logging.getLogger(name).addHandler(self)

    def detach(self) -> None:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(self)


class ServerLogs:
    """Route handlers for ``/internal/logs`` (see the module docstring)."""

    def __init__(self, buffer: LogBuffer) -> None:
        self.buffer = buffer

    async def get_logs(self, request: web.Request) -> web.Response:
        return web.json_response("".join(f"{e['t']} - {e['m']}" for e in list(self.buffer.entries)))

    async def get_raw(self, request: web.Request) -> web.Response:
        return web.json_response({"entries": list(self.buffer.entries), "size": TERMINAL_SIZE})

    async def subscribe(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("clientId"), str) \
                or not isinstance(body.get("enabled"), bool) or len(body["clientId"]) > 256:
            raise web.HTTPBadRequest(text='the body must be {"enabled": true|false, "clientId": "..."}')
        if not body["enabled"]:
            self.buffer.subscribers.discard(body["clientId"])
        elif len(self.buffer.subscribers) < MAX_SUBSCRIBERS or body["clientId"] in self.buffer.subscribers:
            self.buffer.subscribers.add(body["clientId"])
        else:
            raise web.HTTPTooManyRequests(text=f"at most {MAX_SUBSCRIBERS} clients may follow the log")
        return web.Response(status=200)
