"""The file routes: POST /upload/image, POST /upload/mask and GET /view."""

from __future__ import annotations

import asyncio
import io
import mimetypes
from pathlib import Path
from typing import Any

from aiohttp import web

from graph.context import Folders
from graph.paths import UnsafePathError
from latentgraph_server.errors import error_response
from latentgraph_server.openapi import Route
from latentgraph_server.request_paths import folder_for, resolve_inside, split_annotation
from latentgraph_server.uploads import (
    UploadError,
    apply_mask,
    check_image,
    read_form,
    save_upload,
    storage_error,
)

_IMAGE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff"}

ROUTES = [
    Route("POST", "/upload/image", "upload_image", "Upload an image", body="multipart",
          responses={"400": "not an image or bad name", "413": "too large"}),
    Route("POST", "/upload/mask", "upload_mask", "Upload a mask applied as alpha to an image", body="multipart",
          responses={"400": "not an image or bad name", "413": "too large"}),
    Route("GET", "/view", "view", "A file from the input, output or temp folder",
          query=("filename", "type", "subfolder", "preview", "channel"), responses={"404": "no such file"}),
]


class Files:
    """Route handlers for the uploads and ``/view`` over ``folders``; uploads over
    ``max_upload_size`` bytes are refused (413)."""

    def __init__(self, folders: Folders, max_upload_size: int) -> None:
        self.folders = folders
        self.max_upload_size = max_upload_size

    async def upload_image(self, request: web.Request) -> web.Response:
        return await self._upload(request, mask=False)

    async def upload_mask(self, request: web.Request) -> web.Response:
        return await self._upload(request, mask=True)

    async def _upload(self, request: web.Request, *, mask: bool) -> web.Response:
        folders = self.folders
        try:
            form = await read_form(request, self.max_upload_size)
            if "image" not in form.files:
                raise UploadError(400, "the form has no 'image' file")
            filename, data = form.files["image"]
            folder_type = form.fields.get("type") or "input"
            subfolder = form.fields.get("subfolder") or ""
            overwrite = form.fields.get("overwrite", "").lower() in ("true", "1")
            try:
                root = folder_for(folders, folder_type)
            except UnsafePathError as exc:
                raise UploadError(400, str(exc)) from exc
            image = await asyncio.to_thread(check_image, data)
            if mask:
                data = await asyncio.to_thread(apply_mask, folders, form.fields.get("original_ref", ""), image)
            try:
                name, _ = await asyncio.to_thread(save_upload, root, subfolder, filename, data, overwrite)
            except OSError as exc:
                raise UploadError(*storage_error(exc, "store the upload")) from exc
        except UploadError as exc:
            return error_response(exc.status, str(exc))
        except UnsafePathError as exc:
            return error_response(400, str(exc))
        return web.json_response({"name": name, "subfolder": subfolder, "type": folder_type})

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        filename = query.get("filename")
        if not filename:
            return error_response(400, "filename is required")
        filename, folder_type = split_annotation(filename, query.get("type") or "output")
        try:
            root = folder_for(self.folders, folder_type)
            path = resolve_inside(root, query.get("subfolder") or "", filename)
        except UnsafePathError as exc:
            return error_response(400, str(exc))
        if not path.is_file():
            return error_response(404, "file not found")
        preview = query.get("preview")
        channel = (query.get("channel") or "").lower()
        if preview or channel in ("rgb", "a"):
            try:
                body, content_type = await asyncio.to_thread(_converted, path, preview, channel)
            except UploadError as exc:
                return error_response(exc.status, str(exc))
            return web.Response(body=body, content_type=content_type, headers=_file_headers(path))
        content_type = mimetypes.guess_type(path.name)[0] or ""
        headers = _file_headers(path)
        # Never let a file in a folder be rendered as a page of this origin.
        headers["Content-Type"] = content_type if content_type in _IMAGE_TYPES else "application/octet-stream"
        return web.FileResponse(path, headers=headers)


def _file_headers(path: Path) -> dict[str, str]:
    safe_name = "".join(ch for ch in path.name if ch.isprintable() and ch not in '"\\')
    return {"Content-Disposition": f'filename="{safe_name}"', "X-Content-Type-Options": "nosniff"}


def _converted(path: Path, preview: str | None, channel: str) -> tuple[bytes, str]:
    """The image as a preview (``"webp;90"``, ``"jpeg;80"``) and/or one channel (``rgb``, ``a``)."""
    image: Any = check_image(path.read_bytes())
    if channel == "rgb":
        image = image.convert("RGB")
    elif channel == "a":
        rgba = image.convert("RGBA")
        image = rgba.getchannel("A")
    fmt, quality = "png", 90
    if preview:
        parts = preview.split(";")
        fmt = parts[0].lower() if parts[0].lower() in ("webp", "jpeg", "png") else "webp"
        if len(parts) > 1 and parts[1].isdigit():
            quality = max(1, min(100, int(parts[1])))
    if fmt == "jpeg" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), quality=quality)
    return buffer.getvalue(), f"image/{fmt}"
