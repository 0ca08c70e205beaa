"""The user's settings and the user list, in the shapes ComfyUI's frontend reads at start-up.

The official frontend will not leave its splash screen until ``GET /users`` and
``GET /settings`` answer. This server has one user, ``default`` (ComfyUI without
``--multi-user``): ``GET /users`` says settings are stored on the server.

Settings are one JSON object in ``<user directory>/default/comfy.settings.json`` (ComfyUI's
file name, so a settings file copied from ComfyUI works here):

- ``GET /settings``: the whole object (``{}`` before anything was saved);
- ``GET /settings/{id}``: one value, ``null`` when unset;
- ``POST /settings``: merges a JSON object into it;
- ``POST /settings/{id}``: sets one value (any JSON).

The file is found with ``graph.paths.safe_join`` under the user directory, and a setting id
is only ever a key in that object, never part of a path; ids that look like paths
(separators, ``..``, control characters) or are overlong are refused with a 400 all the same,
as no frontend setting has such an id. Writes are atomic (a crash never leaves half a
file) and serialised, so two tabs saving at once cannot lose each other's keys.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from graph.paths import safe_join
from latentgraph_server.openapi import Route
from latentgraph_server.request_bounds import read_json
from latentgraph_server.uploads import write_atomically

DEFAULT_USER = "default"
SETTINGS_FILE = "comfy.settings.json"
MAX_SETTING_ID = 256
# The frontend's settings take a few KiB; a store growing past this is refused (413), not written.
MAX_SETTINGS_BYTES = 4 * 1024 * 1024
# Printable, no path separators: what every frontend setting id looks like ("Comfy.Locale").
_SETTING_ID = re.compile(r"^[^\x00-\x1f\x7f/\\]+$")


ROUTES = [
    Route("GET", "/users", "get_users", "The user list (one user: default; settings on the server)"),
    Route("GET", "/settings", "get_settings", "The user's settings"),
    Route("POST", "/settings", "post_settings", "Merge settings (a JSON object)", body="json",
          responses={"400": "not an object, or a bad setting id"}),
    Route("GET", "/settings/{id}", "get_setting", "One setting (null when unset)",
          responses={"400": "bad setting id"}),
    Route("POST", "/settings/{id}", "post_setting", "Set one setting (any JSON value)", body="json",
          responses={"400": "bad setting id or body"}),
]


def check_setting_id(setting_id: str) -> str:
    if not setting_id or len(setting_id) > MAX_SETTING_ID or not _SETTING_ID.match(setting_id) \
            or ".." in setting_id:
        # HTTP errors become JSON bodies in the server's error middleware.
        raise web.HTTPBadRequest(text=f"not a setting id: {setting_id[:80]!r} (printable text without '/', "
                                      f"'\\' or '..', at most {MAX_SETTING_ID} characters)")
    return setting_id


class UserSettings:
    """Route handlers for ``/users`` and ``/settings`` (see the module docstring)."""

    def __init__(self, user_directory: Path) -> None:
        self.user_directory = Path(user_directory)
        self._lock = asyncio.Lock()

    @property
    def settings_path(self) -> Path:
        return safe_join(self.user_directory, DEFAULT_USER, SETTINGS_FILE)

    def load(self) -> dict[str, Any]:
        """The stored settings; a missing or unreadable file reads as none saved yet."""
        try:
            stored = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError):
            return {}  # a damaged file must not keep the frontend from starting; the next save replaces it
        return stored if isinstance(stored, dict) else {}

    def _save(self, settings: dict[str, Any]) -> None:
        try:
            # No NaN or Infinity: the browser's JSON.parse refuses them, and the frontend would not start.
            data = json.dumps(settings, indent=4, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"a setting is not plain JSON: {exc}") from exc
        if len(data) > MAX_SETTINGS_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_SETTINGS_BYTES, len(data),
                                                text=f"the settings would exceed {MAX_SETTINGS_BYTES} bytes")
        path = self.settings_path
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)

    async def get_users(self, request: web.Request) -> web.Response:
        user_root = safe_join(self.user_directory, DEFAULT_USER)
        return web.json_response({"storage": "server", "migrated": await asyncio.to_thread(user_root.is_dir)})

    async def get_settings(self, request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(self.load))

    async def get_setting(self, request: web.Request) -> web.Response:
        setting_id = check_setting_id(request.match_info["id"])
        return web.json_response((await asyncio.to_thread(self.load)).get(setting_id))

    async def post_settings(self, request: web.Request) -> web.Response:
        body = await read_json(request, text_from_own_pages=True)
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object of setting ids and values")
        for setting_id in body:
            check_setting_id(setting_id)
        await self._update(lambda settings: settings.update(body))
        return web.Response(status=200)

    async def post_setting(self, request: web.Request) -> web.Response:
        setting_id = check_setting_id(request.match_info["id"])
        value = await read_json(request, text_from_own_pages=True)
        await self._update(lambda settings: settings.__setitem__(setting_id, value))
        return web.Response(status=200)

    async def _update(self, change: Any) -> None:
        async with self._lock:
            def apply() -> None:
                settings = self.load()
                change(settings)
                self._save(settings)

            await asyncio.to_thread(apply)
