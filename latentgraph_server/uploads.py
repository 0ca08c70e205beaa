"""POST /upload/image and /upload/mask: size-limited multipart reading, image checks, saving.

Uploads are read in chunks and refused (413) past the size limit. The bytes must be an
image Pillow can decode within its pixel limit: anything over ``Image.MAX_IMAGE_PIXELS``
(the point where Pillow only warns) is refused, as is anything Pillow cannot fully load,
so decompression bombs never reach a node. Names are plain file names; the same content
under an existing name reuses it, different content gets ``name (1).ext``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from graph.paths import UnsafePathError
from latentgraph_server.request_paths import check_relative, folder_for, resolve_inside

_CHUNK = 64 * 1024


class UploadError(Exception):
    """A refused upload; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class UploadForm:
    """The fields of an upload form."""

    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)


async def read_form(request: web.Request, limit: int) -> UploadForm:
    """Reads a multipart form, refusing bodies over ``limit`` bytes (413)."""
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise UploadError(413, f"upload larger than the limit of {limit} bytes")
    if not request.content_type.startswith("multipart/"):
        raise UploadError(400, "expected a multipart/form-data body")
    try:
        reader = await request.multipart()
    except Exception as exc:
        raise UploadError(400, f"malformed multipart body: {exc}") from exc
    form = UploadForm()
    total = 0
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise UploadError(400, "nested multipart bodies are not supported")
            data = bytearray()
            while True:
                chunk = await part.read_chunk(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise UploadError(413, f"upload larger than the limit of {limit} bytes")
                data.extend(chunk)
            name = part.name or ""
            if part.filename is not None:
                form.files[name] = (part.filename, bytes(data))
            else:
                form.fields[name] = data.decode("utf-8", errors="replace")
    except UploadError:
        raise
    except Exception as exc:
        raise UploadError(400, f"malformed multipart body: {exc}") from exc
    return form


def check_image(data: bytes) -> Any:
    """Decodes ``data`` fully with Pillow's guards; returns the image or raises UploadError(400)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; here it is an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        if Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS:
            raise UploadError(400, f"image of {width}x{height} pixels exceeds the limit (decompression bomb?)")
        image.load()
    except UploadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadError(400, f"not an acceptable image: {exc}") from exc
    except Exception as exc:  # truncated or corrupt data
        raise UploadError(400, f"cannot decode the image: {type(exc).__name__}: {exc}") from exc
    return image


def save_upload(root: Path, subfolder: str, filename: str, data: bytes, overwrite: bool) -> tuple[str, Path]:
    """Writes ``data`` under ``root/subfolder``; returns the name used and its path."""
    try:
        check_relative(filename, what="filename", allow_nested=False)
        target = resolve_inside(root, subfolder, filename)
    except UnsafePathError as exc:
        raise UploadError(400, str(exc)) from exc
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    # mkdir may have followed a symlinked subfolder: check again now that it exists.
    resolve_inside(root, subfolder)
    name = target.name
    if not overwrite:
        stem, suffix = os.path.splitext(name)
        digest = hashlib.sha256(data).digest()
        counter = 1
        while (directory / name).exists():
            if _digest_of(directory / name) == digest:
                return name, directory / name
            name = f"{stem} ({counter}){suffix}"
            counter += 1
    path = directory / name
    if path.is_symlink():
        raise UploadError(400, "refusing to write through a symlink")
    write_atomically(path, data)
    return name, path


def _digest_of(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


def storage_error(exc: OSError, what: str) -> tuple[int, str]:
    """The status and message for a failed write: 507 when the disk is full, 409 when a
    file stands where a folder must be, 503 otherwise (a read-only disk, permissions)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return 507, f"cannot {what}: no space left on the server's disk"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return 409, f"cannot {what}: a file or folder of that name is in the way"
    return 503, f"cannot {what}: {exc.strerror or exc}"


def write_atomically(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` (whose folder exists) through a temporary file and a rename,
    so readers never see a half-written file."""
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def apply_mask(folders: Any, original_ref: str, mask_image: Any) -> bytes:
    """The referenced image with the mask's alpha as its alpha channel, as PNG bytes."""
    from PIL import Image

    try:
        ref = json.loads(original_ref)
    except (TypeError, json.JSONDecodeError) as exc:
        raise UploadError(400, "original_ref must be JSON {filename, subfolder, type}") from exc
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise UploadError(400, "original_ref must name a filename")
    try:
        root = folder_for(folders, ref.get("type") or "output")
        source = resolve_inside(root, ref.get("subfolder") or "", ref["filename"])
    except UnsafePathError as exc:
        raise UploadError(400, str(exc)) from exc
    if not source.is_file():
        raise UploadError(404, "original image not found")
    original = check_image(source.read_bytes())
    if "A" not in mask_image.getbands():
        raise UploadError(400, "the mask must have an alpha channel")
    alpha = mask_image.getchannel("A")
    if alpha.size != original.size:
        alpha = alpha.resize(original.size, Image.Resampling.LANCZOS)
    result = original.convert("RGBA")
    result.putalpha(alpha)
    buffer = io.BytesIO()
    result.save(buffer, format="PNG", compress_level=4)
    return buffer.getvalue()
