"""The websocket hub: who is connected, and getting each message to the right clients in order.

Each connection has its own outgoing queue drained by one sender task, so messages
reach a client in the order they were published, and a slow client never blocks the
others or the event loop. Messages are published from the loop thread (``send``);
the worker thread uses ``send_threadsafe``, which hops onto the loop with
``call_soon_threadsafe``. A client_id may have several connections (tabs, reconnects);
a prompt's events go to all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from latentgraph_server.previews import PREVIEW_FLAG

# Live previews are dropped for a client whose queue is this long (it is falling behind).
_PREVIEW_BACKLOG = 64


def encode_message(event: str, data: Any) -> str:
    return json.dumps({"type": event, "data": data}, default=repr, separators=(",", ":"))


class Connection:
    """One websocket and its outgoing queue."""

    def __init__(self, client_id: str, socket: web.WebSocketResponse) -> None:
        self.client_id = client_id
        self.socket = socket
        # What the client announced in its `feature_flags` message (e.g. that it wants previews).
        self.feature_flags: dict[str, Any] = {}
        self.outbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()

    async def run_sender(self) -> None:
        """Sends queued messages until ``None`` arrives or the socket closes."""
        while True:
            message = await self.outbox.get()
            if message is None or self.socket.closed:
                return
            try:
                if isinstance(message, bytes):
                    await self.socket.send_bytes(message)
                else:
                    await self.socket.send_str(message)
            except (ConnectionError, RuntimeError):
                return


class Hub:
    """Connected clients by client_id."""

    def __init__(self) -> None:
        self._clients: dict[str, set[Connection]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def add(self, connection: Connection) -> None:
        self._clients.setdefault(connection.client_id, set()).add(connection)

    def remove(self, connection: Connection) -> None:
        group = self._clients.get(connection.client_id)
        if group is not None:
            group.discard(connection)
            if not group:
                del self._clients[connection.client_id]
        connection.outbox.put_nowait(None)

    def connections(self) -> list[Connection]:
        return [conn for group in self._clients.values() for conn in group]

    def send(self, client_id: str | None, event: str, data: Any) -> None:
        """Queues a JSON message for one client_id, or for everyone when ``client_id`` is None.
        Loop thread only."""
        self.send_text(client_id, encode_message(event, data))

    def send_text(self, client_id: str | None, text: str) -> None:
        targets = self.connections() if client_id is None else list(self._clients.get(client_id, ()))
        for conn in targets:
            conn.outbox.put_nowait(text)

    def send_preview(self, client_id: str | None, legacy: bytes, with_metadata: bytes, *, only_askers: bool,
                     droppable: bool = True) -> None:
        """Queues an image frame for a client's connections: the metadata frame to those that
        announced ``supports_preview_metadata``, the legacy frame to the rest, and nothing to
        the rest when ``only_askers`` (latentgraph_server/previews.py decides). A live preview
        is ``droppable`` for a client falling behind; a SaveImageWebsocket image, the prompt's
        result, is not."""
        targets = self.connections() if client_id is None else list(self._clients.get(client_id, ()))
        for conn in targets:
            asked = conn.feature_flags.get(PREVIEW_FLAG) is True
            if (asked or not only_askers) and (not droppable or conn.outbox.qsize() < _PREVIEW_BACKLOG):
                conn.outbox.put_nowait(with_metadata if asked else legacy)

    def call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        """Runs ``callback(*args)`` on the loop thread; callable from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(callback, *args)

    def send_threadsafe(self, client_id: str | None, event: str, data: Any) -> None:
        # Serialised here, on the calling (worker) thread, to keep the loop's work small.
        self.call_soon(self.send_text, client_id, encode_message(event, data))

    def send_preview_threadsafe(self, client_id: str | None, legacy: bytes, with_metadata: bytes,
                                only_askers: bool, droppable: bool = True) -> None:
        self.call_soon(lambda: self.send_preview(client_id, legacy, with_metadata, only_askers=only_askers,
                                                 droppable=droppable))

    async def close_all(self) -> None:
        for conn in self.connections():
            with contextlib.suppress(Exception):
                await conn.socket.close()
            self.remove(conn)
