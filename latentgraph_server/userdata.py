"""The editor's workflow library: the user's own files and the read-only examples.

Two route families, in the shapes ComfyUI's frontend uses:

- ``/userdata``: files in the user's folder (``user/default/``), e.g. saved workflows under
  ``workflows/``. ``GET /userdata?dir=workflows`` lists (``recurse``, ``full_info``,
  ``split`` as in ComfyUI); ``GET|POST|DELETE /userdata/{file}`` reads, writes (raw body;
  ``overwrite=false`` gives 409 when the file exists) and deletes one file, whose path is
  URL-encoded into one segment (``workflows%2Fmine.json``); ``POST
  /userdata/{file}/move/{dest}`` renames.
- ``/workflow_templates``: the example workflows shipped in ``workflows/``, read-only.
  ``GET /workflow_templates`` answers ``{"latentgraph": [names without .json]}`` and
  ``GET /workflow_templates/latentgraph/{file}`` one file, as ComfyUI serves the
  example workflows of a custom-node package.

Every path goes through ``graph.paths.safe_join``: nothing a request names can leave
its folder (no ``..``, absolute paths, backslashes, NUL bytes or symlink escapes).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from graph.paths import NameTooLongError, UnsafePathError, safe_join
from latentgraph_server.errors import BadRequest, error_response
from latentgraph_server.openapi import Route
from latentgraph_server.request_bounds import read_body
from latentgraph_server.uploads import storage_error, write_atomically

DEFAULT_USER = "default"
TEMPLATE_MODULE = "latentgraph"
MAX_USERDATA_BYTES = 32 * 1024 * 1024


ROUTES = [
    Route("GET", "/userdata", "list_userdata", "The user's files in a folder (?dir=workflows)",
          query=("dir", "recurse", "full_info", "split")),
    Route("GET", "/userdata/{file}", "get_userdata", "One user file (path URL-encoded: workflows%2Fa.json)",
          responses={"404": "no such file"}),
    Route("POST", "/userdata/{file}", "post_userdata", "Write a user file (raw body)", body="json",
          query=("overwrite", "full_info"), responses={"409": "exists and overwrite=false"}),
    Route("DELETE", "/userdata/{file}", "delete_userdata", "Delete a user file", responses={"404": "no such file"}),
    Route("POST", "/userdata/{file}/move/{dest}", "move_userdata", "Rename a user file",
          query=("overwrite", "full_info"), responses={"409": "destination exists"}),
    Route("GET", "/workflow_templates", "get_workflow_templates", "The example workflows, by package"),
    Route("GET", "/workflow_templates/latentgraph/{file}", "get_workflow_template", "One example workflow",
          responses={"404": "no such example"}),
]


def _refused(exc: UnsafePathError) -> web.Response:
    """400 for a name no file system takes, 403 for one that would leave the folder."""
    return error_response(400 if isinstance(exc, NameTooLongError) else 403, str(exc))


def _flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    return raw.lower() not in ("false", "0", "no")


def _file_info(path: Path, root: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": stat.st_size,
            "modified": int(stat.st_mtime * 1000), "created": int(stat.st_ctime * 1000)}


def _write_creating_folders(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)


def _download_headers(path: Path) -> dict[str, str]:
    content_type = "application/json" if path.suffix.lower() == ".json" else "application/octet-stream"
    # User files are data, never pages of this origin.
    return {"Content-Type": content_type, "X-Content-Type-Options": "nosniff", "Content-Disposition": "attachment"}


class WorkflowLibrary:
    """Route handlers for ``/userdata`` and ``/workflow_templates`` (see the module docstring).

    ``user_directory`` holds one folder per user (only ``default`` for now);
    ``examples_directory`` is the read-only examples folder, or None for none.
    """

    def __init__(self, user_directory: Path, examples_directory: Path | None,
                 max_bytes: int = MAX_USERDATA_BYTES) -> None:
        # Resolved once: request paths are resolved and compared with it (a relative root never matches).
        self.user_root = (Path(user_directory) / DEFAULT_USER).resolve()
        self.examples = Path(examples_directory).resolve() if examples_directory is not None else None
        self.max_bytes = max_bytes
        try:  # the editor lists workflows/ first thing: let it exist
            (self.user_root / "workflows").mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # read-only setups: listing answers 404 and saving reports the error

    def _user_path(self, relative: str) -> Path:
        if not relative or not relative.strip("/"):
            raise UnsafePathError("a file name is required")
        self.user_root.mkdir(parents=True, exist_ok=True)
        return safe_join(self.user_root, relative)

    async def list_userdata(self, request: web.Request) -> web.Response:
        directory = request.query.get("dir", "")
        if not directory:
            return error_response(400, "dir is required")
        try:
            folder = self._user_path(directory)
        except UnsafePathError as exc:
            return _refused(exc)
        if not folder.is_dir():
            return error_response(404, f"no folder {directory!r}")
        recurse = _flag(request, "recurse", False)
        full_info = _flag(request, "full_info", False)
        split = _flag(request, "split", False)
        found = sorted(p for p in (folder.rglob("*") if recurse else folder.glob("*")) if p.is_file())
        if full_info:
            return web.json_response([_file_info(p, folder) for p in found])
        relative = [p.relative_to(folder).as_posix() for p in found]
        if split:
            return web.json_response([[name, *name.split("/")] for name in relative])
        return web.json_response(relative)

    async def get_userdata(self, request: web.Request) -> web.StreamResponse:
        try:
            path = self._user_path(request.match_info["file"])
        except UnsafePathError as exc:
            return _refused(exc)
        if not path.is_file():
            return error_response(404, "file not found")
        return web.FileResponse(path, headers=_download_headers(path))

    async def post_userdata(self, request: web.Request) -> web.Response:
        try:
            path = self._user_path(request.match_info["file"])
        except UnsafePathError as exc:
            return _refused(exc)
        if not _flag(request, "overwrite", True) and path.exists():
            return error_response(409, "file already exists")
        if path.is_dir():
            return error_response(400, "a folder has that name")
        try:
            body = await read_body(request, self.max_bytes)  # refused before it is all buffered
        except BadRequest as exc:
            return error_response(exc.status, str(exc))
        try:
            await asyncio.to_thread(_write_creating_folders, path, body)
        except OSError as exc:
            return error_response(*storage_error(exc, f"write {path.name}"))
        if _flag(request, "full_info", False):
            return web.json_response(_file_info(path, self.user_root))
        return web.json_response(path.relative_to(self.user_root).as_posix())

    async def delete_userdata(self, request: web.Request) -> web.Response:
        try:
            path = self._user_path(request.match_info["file"])
        except UnsafePathError as exc:
            return _refused(exc)
        if not path.is_file():
            return error_response(404, "file not found")
        try:
            path.unlink()
        except OSError as exc:
            return error_response(*storage_error(exc, f"delete {path.name}"))
        return web.Response(status=204)

    async def move_userdata(self, request: web.Request) -> web.Response:
        try:
            source = self._user_path(request.match_info["file"])
            dest = self._user_path(request.match_info["dest"])
        except UnsafePathError as exc:
            return _refused(exc)
        if not source.is_file():
            return error_response(404, "file not found")
        if dest.is_dir() or (not _flag(request, "overwrite", True) and dest.exists()):
            return error_response(409, "destination exists")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, dest)
        except OSError as exc:
            return error_response(*storage_error(exc, f"move {source.name}"))
        if _flag(request, "full_info", False):
            return web.json_response(_file_info(dest, self.user_root))
        return web.json_response(dest.relative_to(self.user_root).as_posix())

    # -- examples ------------------------------------------------------------------------

    def example_names(self) -> list[str]:
        if self.examples is None or not self.examples.is_dir():
            return []
        return sorted(p.stem for p in self.examples.glob("*.json") if p.is_file())

    async def get_workflow_templates(self, request: web.Request) -> web.Response:
        return web.json_response({TEMPLATE_MODULE: self.example_names()})

    async def get_workflow_template(self, request: web.Request) -> web.StreamResponse:
        if self.examples is None:
            return error_response(404, "no examples folder")
        try:
            path = safe_join(self.examples, request.match_info["file"])
        except UnsafePathError as exc:
            return _refused(exc)
        if path.suffix.lower() != ".json" or not path.is_file():
            return error_response(404, "no such example")
        return web.FileResponse(path, headers={"Content-Type": "application/json",
                                               "X-Content-Type-Options": "nosniff"})
