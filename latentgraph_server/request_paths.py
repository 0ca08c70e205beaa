"""Resolving file names from requests to paths that stay inside the input, output and temp folders.

Every name and subfolder a client sends goes through ``resolve_inside``, which adds the
request-level rules (a plain file name, a known folder type) to ``graph.paths.safe_join``.
"""

from __future__ import annotations

import re
from pathlib import Path

from graph.context import Folders
from graph.paths import UnsafePathError, check_relative, safe_join

FOLDER_TYPES = ("input", "output", "temp")
_ANNOTATION = re.compile(r"^(?P<name>.*) \[(?P<type>input|output|temp)\]$")


def folder_for(folders: Folders, folder_type: str) -> Path:
    """The folder for a ``type`` field ("input", "output" or "temp")."""
    if folder_type not in FOLDER_TYPES:
        raise UnsafePathError(f"type must be one of {', '.join(FOLDER_TYPES)}")
    return Path(getattr(folders, folder_type))


def split_annotation(filename: str, default_type: str) -> tuple[str, str]:
    """ComfyUI's annotated names: ``"cat.png [output]"`` -> ("cat.png", "output")."""
    match = _ANNOTATION.match(filename)
    if match:
        return match.group("name"), match.group("type")
    return filename, default_type


def resolve_inside(root: str | Path, subfolder: str, filename: str | None = None) -> Path:
    """``root/subfolder/filename``, guaranteed (after resolving symlinks) to be inside ``root``.

    ``filename`` must be a plain name: a request names its folders in ``subfolder``.
    """
    check_relative(subfolder, what="subfolder", allow_nested=True)
    if filename is None:
        return safe_join(root, subfolder)
    if not check_relative(filename, what="filename", allow_nested=False):
        raise UnsafePathError("filename is empty")
    return safe_join(root, subfolder, filename)
