"""Resolving user-supplied file names inside a folder, so that no path escapes it."""

from __future__ import annotations

import os
from pathlib import Path


class UnsafePathError(ValueError):
    """A requested path would leave its folder (``..``, absolute, NUL, symlink escape)."""


def safe_join(root: str | Path, *parts: str) -> Path:
    """Joins ``parts`` under ``root`` and checks the result stays inside ``root``.

    Rejects NUL bytes, absolute parts, drive letters and backslash separators, and
    resolves symlinks before the containment check, so a link inside the folder that
    points outside is refused too. Returns the resolved path (it need not exist).
    """
    base = Path(root).resolve()
    for part in parts:
        if not isinstance(part, str):
            raise UnsafePathError(f"path part must be a string, got {type(part).__name__}")
        if "\x00" in part or "\\" in part:
            raise UnsafePathError(f"invalid character in path {part!r}")
        if part.startswith("/") or (len(part) > 1 and part[1] == ":"):
            raise UnsafePathError(f"absolute path not allowed: {part!r}")
    candidate = base.joinpath(*[p for p in parts if p])
    resolved = Path(os.path.realpath(candidate))
    if resolved != base and base not in resolved.parents:
        raise UnsafePathError(f"path {'/'.join(parts)!r} leaves its folder")
    return resolved
