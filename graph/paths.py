"""Resolving user-supplied file names inside a folder, so that no path escapes it.

Every name and subfolder that comes from a workflow or a request goes through
``safe_join``. It refuses NUL bytes, backslashes (Windows separators), absolute paths,
drive letters and ``..`` components outright, then resolves symlinks and checks the
result is still inside the folder, so a symlink planted in a folder cannot lead out of it.

Model folders are the exception (``join_following_links``, ``list_files(follow_links=True)``):
there, as in ComfyUI, users link checkpoints kept on another disk, so links are followed
wherever they point; names are still checked, so a name alone cannot climb out.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_DRIVE = re.compile(r"^[A-Za-z]:")


# What common file systems accept: 255 bytes a name, 4096 a path (we leave room for the folder).
MAX_NAME_BYTES = 255
MAX_RELATIVE_PATH_BYTES = 1024


class UnsafePathError(ValueError):
    """A requested path that is malformed or would leave its folder."""


class NameTooLongError(UnsafePathError):
    """A name no file system here could hold (refused before touching the disk)."""


def check_relative(text: str, *, what: str = "path", allow_nested: bool = True) -> list[str]:
    """Splits a client-supplied relative path into safe components, or raises UnsafePathError.

    ``allow_nested=False`` requires a plain file name (no ``/``).
    """
    if not isinstance(text, str):
        raise UnsafePathError(f"{what} must be a string")
    if "\x00" in text:
        raise UnsafePathError(f"{what} contains a NUL byte")
    if "\\" in text:
        raise UnsafePathError(f"{what} contains a backslash")
    if text.startswith("/") or _DRIVE.match(text):
        raise UnsafePathError(f"{what} must be a relative path")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_RELATIVE_PATH_BYTES:
        raise NameTooLongError(f"{what} is longer than {MAX_RELATIVE_PATH_BYTES} bytes")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in parts):
        raise NameTooLongError(f"{what} has a name longer than {MAX_NAME_BYTES} bytes")
    if any(part == ".." for part in parts):
        raise UnsafePathError(f"{what} {text!r} leaves its folder ('..' is not allowed)")
    if not allow_nested and len(parts) > 1:
        raise UnsafePathError(f"{what} must be a plain file name")
    return parts


def safe_join(root: str | Path, *parts: str) -> Path:
    """``root/part/...`` resolved, guaranteed (after resolving symlinks) to be inside ``root``.

    Each part is checked with ``check_relative``. Returns the resolved path (it need not exist).
    """
    components: list[str] = []
    for part in parts:
        components += check_relative(part)
    base = Path(root).resolve()
    target = base.joinpath(*components).resolve()
    if target != base and not target.is_relative_to(base):
        raise UnsafePathError(f"path {'/'.join(components)!r} leaves its folder")
    return target


def join_following_links(root: str | Path, *parts: str) -> Path:
    """``root/part/...`` resolved, for folders whose symlinks are meant to be followed (model
    folders): each part is checked with ``check_relative`` (no ``..``, nothing absolute), but
    a symlink inside ``root`` may lead anywhere. Only for folders the installation's owner
    fills, never for ones a client can write to (input, output, temp, user data)."""
    components: list[str] = []
    for part in parts:
        components += check_relative(part)
    return Path(root).resolve().joinpath(*components).resolve()


def list_files(root: str | Path, suffixes: tuple[str, ...], *, follow_links: bool = False) -> list[str]:
    """Files under ``root`` (any depth) whose suffix is one of ``suffixes`` (lower case),
    as sorted ``/``-separated paths relative to ``root``; empty if ``root`` is no folder.

    By default only what ``safe_join`` would open is listed: a symlink whose target lies
    outside ``root`` is left out. ``follow_links`` lists what ``join_following_links`` opens:
    linked files and the contents of linked folders (each real folder once, so a link
    cycle ends).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    if not follow_links:
        base = root.resolve()
        return sorted(path.relative_to(root).as_posix() for path in root.rglob("*")
                      if path.suffix.lower() in suffixes and path.is_file() and path.resolve().is_relative_to(base))
    found: list[str] = []
    seen: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        relative = Path(folder).relative_to(root)
        for name in files:
            path = Path(folder) / name
            if path.suffix.lower() in suffixes and path.is_file():
                found.append((relative / name).as_posix())
    return sorted(found)
