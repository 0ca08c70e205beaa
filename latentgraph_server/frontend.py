"""The official ComfyUI frontend as a front end of this server, and the small routes it reads.

``--front-end official`` serves the static files of the installed
``comfyui-frontend-package`` (``pip install latentgraph[frontend]``); ``--front-end-root
DIR`` (alias ``--web-directory``) serves any folder. Our own editor (``web/``) stays the default.

Routes, in ComfyUI's shapes:

- ``GET /features``: the server's capabilities, also sent as the websocket's
  ``feature_flags`` message (``supports_preview_metadata``, ``max_upload_size``);
- ``GET /i18n``: translations contributed by custom nodes (none here: ``{}``);
- ``GET /global_subgraphs`` and ``/global_subgraphs/{id}``: subgraph blueprints shipped
  by custom nodes (none here: ``{}``, and 404 for any id);
- ``GET /templates/index.json`` (and ``index.{locale}.json``, ``index_logo.json``): ComfyUI's
  own template gallery, from its ``comfyui-workflow-templates`` package. Its templates need
  ComfyUI's models, so none are offered (an empty list); our examples appear in the
  frontend's template browser under "latentgraph", from ``/workflow_templates``.
"""

from __future__ import annotations

import re
from importlib import import_module
from pathlib import Path
from typing import Any

from aiohttp import web

from latentgraph_server.openapi import Route

PACKAGE = "comfyui_frontend_package"
_TEMPLATE_INDEX = re.compile(r"^index(\.[A-Za-z-]{2,10})?\.json$")

ROUTES = [
    Route("GET", "/features", "get_features", "The server's feature flags"),
    Route("GET", "/i18n", "get_i18n", "Translations from custom nodes"),
    Route("GET", "/global_subgraphs", "get_global_subgraphs", "Subgraph blueprints from custom nodes"),
    Route("GET", "/global_subgraphs/{id}", "get_global_subgraph", "One subgraph blueprint",
          responses={"404": "no such blueprint"}),
    Route("GET", "/templates/{file}", "get_template_file",
          "ComfyUI's template index (empty: our examples are under /workflow_templates)",
          responses={"404": "not an index file"}),
]


class FrontEndMissing(RuntimeError):
    """--front-end official without the package installed."""


def official_front_end_root() -> Path:
    """The static folder of the installed comfyui-frontend-package."""
    try:
        package = import_module(PACKAGE)
    except ImportError as exc:
        raise FrontEndMissing("--front-end official needs the comfyui-frontend-package: "
                              "pip install 'latentgraph[frontend]' (or comfyui-frontend-package)") from exc
    root = Path(package.__file__).resolve().parent / "static"
    if not (root / "index.html").is_file():
        raise FrontEndMissing(f"the installed {PACKAGE} has no static/index.html under {root.parent}")
    return root


def server_features(max_upload_size: int) -> dict[str, Any]:
    """What this server tells clients it supports (ComfyUI's feature flags)."""
    return {"supports_preview_metadata": True, "max_upload_size": max_upload_size}


class FrontEndRoutes:
    """Route handlers for ``/features``, ``/i18n`` and ``/global_subgraphs``."""

    def __init__(self, max_upload_size: int) -> None:
        self.features = server_features(max_upload_size)

    async def get_features(self, request: web.Request) -> web.Response:
        return web.json_response(self.features)

    async def get_i18n(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def get_global_subgraphs(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def get_global_subgraph(self, request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text=f"no global subgraph {request.match_info['id'][:80]!r}")

    async def get_template_file(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name == "index_logo.json":
            return web.json_response({})
        if _TEMPLATE_INDEX.match(name):
            return web.json_response([])
        raise web.HTTPNotFound(text="ComfyUI's template files are not served here (see /workflow_templates)")
