"""Resolving file names from requests to paths that stay inside the input, output and temp folders.

Every name and subfolder a client sends goes through ``resolve_inside``. It refuses NUL
bytes, backslashes (Windows separators), absolute paths, drive letters and ``..``
components outright, then resolves symlinks and checks the result is still inside
the folder, so a symlink planted in a folder cannot lead out of it either.
"""

from __future__ import annotations

import re
from pathlib import Path

from graph.context import Folders

FOLDER_TYPES = ("input", "output", "temp")
_DRIVE = re.compile(r"^[A-Za-z]:")
_ANNOTATION = re.compile(r"^(?P<name>.*) \[(?P<type>input|output|temp)\]$")


class UnsafePath(ValueError):
    """A requested path that is malformed or would leave its folder."""


def folder_for(folders: Folders, folder_type: str) -> Path:
    """The folder for a ``type`` field ("input", "output" or "temp")."""
    if folder_type not in FOLDER_TYPES:
        raise UnsafePath(f"type must be one of {', '.join(FOLDER_TYPES)}")
    return Path(getattr(folders, folder_type))


def split_annotation(filename: str, default_type: str) -> tuple[str, str]:
    """ComfyUI's annotated names: ``"cat.png [output]"`` -> ("cat.png", "output")."""
    match = _ANNOTATION.match(filename)
    if match:
        return match.group("name"), match.group("type")
    return filename, default_type


def check_relative(text: str, *, what: str, allow_nested: bool) -> list[str]:
    """Splits a client-supplied relative path into safe components, or raises UnsafePath."""
    if not isinstance(text, str):
        raise UnsafePath(f"{what} must be a string")
    if "\x00" in text:
        raise UnsafePath(f"{what} contains a NUL byte")
    if "\\" in text:
        raise UnsafePath(f"{what} contains a backslash")
    if text.startswith("/") or _DRIVE.match(text):
        raise UnsafePath(f"{what} must be a relative path")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise UnsafePath(f"{what} must not contain '..'")
    if not allow_nested and len(parts) > 1:
        raise UnsafePath(f"{what} must be a plain file name")
    return parts


def resolve_inside(root: str | Path, subfolder: str, filename: str | None = None) -> Path:
    """``root/subfolder/filename``, guaranteed (after resolving symlinks) to be inside ``root``."""
    parts = check_relative(subfolder, what="subfolder", allow_nested=True)
    if filename is not None:
        name_parts = check_relative(filename, what="filename", allow_nested=False)
        if not name_parts:
            raise UnsafePath("filename is empty")
        parts += name_parts
    base = Path(root).resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and not target.is_relative_to(base):
        raise UnsafePath("path leaves its folder")
    return target
