"""Folder listings for the official frontend's model library and asset panels.

Shapes as ComfyUI answers them:

- ``GET /experiment/models``: ``[{"name": "checkpoints", "folders": ["/abs/models/checkpoints", ...]}, ...]``;
- ``GET /experiment/models/{folder}``: ``[{"name": "sub/model.safetensors", "pathIndex": 0,
  "modified": ..., "size": ...}, ...]`` (``pathIndex``: which of the kind's folders holds
  it), 404 for a kind that does not exist;
- ``GET /experiment/models/preview/{folder}/{path_index}/{filename}``: the picture saved
  beside a model (``name.webp``, ``.png``, ``.jpg``, ``.jpeg`` or ``name.preview.png``), 404 when there is none;
- ``GET /view_metadata/{folder}?filename=NAME``: the ``__metadata__`` of a ``.safetensors``
  model's header, 404 when it has none;
- ``GET /internal/folder_paths``: ``{kind: [folders]}``;
- ``GET /internal/files/{type}``: the file names directly in the input, output or temp
  folder, newest first (hidden files left out).

Model names are resolved with the model folders' own ``resolve`` (which keeps them inside
their folders); nothing here writes.
"""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any

from aiohttp import web

from graph.context import Folders
from graph.paths import UnsafePathError, safe_join
from latentgraph_server.openapi import Route
from latentgraph_server.request_paths import FOLDER_TYPES, folder_for
from nodes.models.folders import ModelFolders

PREVIEW_SUFFIXES = (".webp", ".png", ".jpg", ".jpeg", ".preview.png")
# A safetensors header larger than this is not read for /view_metadata (ComfyUI's bound too).
MAX_HEADER_BYTES = 1024 * 1024

ROUTES = [
    Route("GET", "/experiment/models", "model_folders", "Model kinds and their folders"),
    Route("GET", "/experiment/models/{folder}", "model_files", "Model files of a kind, with sizes",
          responses={"404": "no such kind"}),
    Route("GET", "/experiment/models/preview/{folder}/{path_index}/{filename:.+}", "model_preview",
          "The picture saved beside a model", responses={"404": "no picture"}),
    Route("GET", "/view_metadata/{folder}", "view_metadata", "A .safetensors model's metadata",
          query=("filename",), responses={"404": "no such model or no metadata"}),
    Route("GET", "/internal/folder_paths", "folder_paths", "Model kinds and their folders"),
    Route("GET", "/internal/files/{type}", "files", "Files in the input, output or temp folder",
          responses={"400": "unknown type"}),
]


def _safetensors_metadata(path: Path) -> dict[str, Any] | None:
    with path.open("rb") as stream:
        prefix = stream.read(8)
        if len(prefix) < 8:
            return None
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            return None
        try:
            header = json.loads(stream.read(length))
        except (ValueError, UnicodeDecodeError):
            return None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else None


class ModelLibrary:
    """Route handlers for the folder listings (see the module docstring)."""

    def __init__(self, models: ModelFolders, folders: Folders) -> None:
        self.models = models
        self.folders = folders

    def _folder_paths(self) -> dict[str, list[str]]:
        return {kind: [str(Path(folder).resolve()) for folder in self.models.folders(kind)]
                for kind in self.models.kinds()}

    def _files(self, kind: str) -> list[dict[str, Any]]:
        folders = self.models.folders(kind)
        found = []
        for name in self.models.list(kind):
            for index, folder in enumerate(folders):
                path = Path(folder) / name.rstrip("/")
                if path.exists():
                    stat = path.stat()
                    found.append({"name": name, "pathIndex": index, "modified": stat.st_mtime,
                                  "created": stat.st_ctime, "size": stat.st_size})
                    break
        return found

    async def model_folders(self, request: web.Request) -> web.Response:
        paths = await asyncio.to_thread(self._folder_paths)
        return web.json_response([{"name": kind, "folders": folders} for kind, folders in paths.items()])

    async def model_files(self, request: web.Request) -> web.Response:
        kind = request.match_info["folder"]
        if kind not in await asyncio.to_thread(self.models.kinds):
            raise web.HTTPNotFound(text=f"no model folder {kind[:80]!r}")
        return web.json_response(await asyncio.to_thread(self._files, kind))

    async def model_preview(self, request: web.Request) -> web.StreamResponse:
        kind, index, name = (request.match_info[key] for key in ("folder", "path_index", "filename"))
        folders = self.models.folders(kind) if kind in await asyncio.to_thread(self.models.kinds) else []
        if not index.isdigit() or int(index) >= len(folders):
            raise web.HTTPNotFound(text="no such model folder")
        stem = name.rsplit(".", 1)[0] if "." in name.rsplit("/", 1)[-1] else name
        for suffix in PREVIEW_SUFFIXES:
            try:
                path = safe_join(folders[int(index)], stem + suffix)
            except UnsafePathError as exc:
                raise web.HTTPNotFound(text=str(exc)) from exc
            if await asyncio.to_thread(path.is_file):
                return web.FileResponse(path, headers={"X-Content-Type-Options": "nosniff"})
        raise web.HTTPNotFound(text="the model has no preview picture")

    async def view_metadata(self, request: web.Request) -> web.Response:
        kind = request.match_info["folder"]
        name = request.query.get("filename", "")
        if not name.endswith(".safetensors") or kind not in await asyncio.to_thread(self.models.kinds):
            raise web.HTTPNotFound(text="no such .safetensors model")
        try:
            path = await asyncio.to_thread(self.models.resolve, kind, name)
        except (UnsafePathError, FileNotFoundError, ValueError) as exc:
            raise web.HTTPNotFound(text=f"no such model: {exc}") from exc
        metadata = await asyncio.to_thread(_safetensors_metadata, path) if path.is_file() else None
        if metadata is None:
            raise web.HTTPNotFound(text="the model has no metadata")
        return web.json_response(metadata)

    async def folder_paths(self, request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(self._folder_paths))

    async def files(self, request: web.Request) -> web.Response:
        folder_type = request.match_info["type"]
        if folder_type not in FOLDER_TYPES:
            raise web.HTTPBadRequest(text=f"type must be one of {', '.join(FOLDER_TYPES)}")
        root = folder_for(self.folders, folder_type)

        def listing() -> list[str]:
            if not root.is_dir():
                return []
            entries = [entry for entry in root.iterdir() if not entry.name.startswith(".") and entry.is_file()]
            entries.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
            return [entry.name for entry in entries]

        return web.json_response(await asyncio.to_thread(listing))
