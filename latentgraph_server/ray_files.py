"""Files between the front server and its Ray workers, with no shared filesystem assumed.

Three jobs, none of which imports Ray (so they are tested without it):

- ``prompt_inputs``: the files of the front server's input folder that a prompt names (an
  upload picked in LoadImage, say), so they can travel with the prompt to its worker.
  ``InputTracker`` remembers what each worker already holds, so an unchanged file is sent once.
- ``FolderWatch``: on the worker, which files of its own output and temp folders are new
  or changed since it last looked; they are shipped back as they appear.
- ``place_file`` and ``FileNames``: on the front server, each shipped file lands in the
  front's output (or temp) folder. Every worker counts its own ``prefix_00001_.png`` names,
  so a name already taken at the front gets the next free counter there, and every
  ``{"filename", "subfolder", "type"}`` reference in the prompt's events and history is
  rewritten to the name the file really has. The map is kept per worker for its lifetime,
  because a cached output node replays its old UI payload (with the worker's names).
- ``Announced``: the ``executed`` events a prompt's lost runs already sent to its client, so
  the run that replaces a lost one sends none again for those nodes and keeps their files.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

# Shipped folder kinds, as ComfyUI's /view names them.
SHIPPED = ("output", "temp")
# An input file larger than this is not shipped (an upload is at most --max-upload-size anyway).
MAX_INPUT_BYTES = 1024**3
_COUNTER = re.compile(r"^(?P<prefix>.*_)(?P<counter>\d+)(?P<suffix>_\.[^.]+)$")


def _inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` if that stays inside ``root`` (no ``..``, no absolute path), else None."""
    if not relative or "\x00" in relative or os.path.isabs(relative):
        return None
    candidate = (root / relative).resolve()
    try:
        candidate.relative_to(root.resolve())
    except ValueError:
        return None
    return candidate


def prompt_inputs(prompt: dict[str, Any], input_root: Path) -> dict[str, Path]:
    """Files under ``input_root`` named by a string input of the prompt (``"name"`` or
    ComfyUI's annotated ``"name [input]"``), by the relative name the worker will see."""
    found: dict[str, Path] = {}
    for node in prompt.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for value in inputs.values():
            if not isinstance(value, str) or len(value) > 4096:
                continue
            name = value[:-len(" [input]")] if value.endswith(" [input]") else value
            path = _inside(input_root, name)
            if path is not None and path.is_file():
                found[Path(name).as_posix()] = path
    return found


class InputTracker:
    """What one worker holds of the front's input folder: (size, mtime) per name."""

    def __init__(self) -> None:
        self._sent: dict[str, tuple[int, int]] = {}

    def to_send(self, files: dict[str, Path]) -> dict[str, bytes]:
        """The contents of the files the worker lacks or holds in an older version."""
        payload: dict[str, bytes] = {}
        for name, path in files.items():
            stat = path.stat()
            if stat.st_size > MAX_INPUT_BYTES or self._sent.get(name) == (stat.st_size, stat.st_mtime_ns):
                continue
            payload[name] = path.read_bytes()
            self._sent[name] = (stat.st_size, stat.st_mtime_ns)
        return payload

    def forget(self) -> None:
        self._sent.clear()


def write_inputs(input_root: Path, files: dict[str, bytes]) -> None:
    """On the worker: the shipped input files, written where its nodes look for them."""
    for name, data in files.items():
        path = _inside(input_root, name)
        if path is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".part")
        temporary.write_bytes(data)
        temporary.replace(path)


class FolderWatch:
    """On the worker: new or changed files in its output and temp folders since the last look."""

    def __init__(self, roots: dict[str, Path]) -> None:
        self.roots = roots
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}
        self.changes()  # what is there at start-up is not shipped

    def changes(self) -> list[tuple[str, str, str, bytes]]:
        """``(kind, subfolder, filename, contents)`` of each new or changed file."""
        found = []
        for kind, root in self.roots.items():
            if not root.is_dir():
                continue
            for folder, _, names in os.walk(root):
                for name in names:
                    if name.endswith(".part"):
                        continue
                    path = Path(folder) / name
                    try:
                        stat = path.stat()
                    except OSError:
                        continue  # removed meanwhile
                    relative = path.relative_to(root)
                    key = (kind, relative.as_posix())
                    state = (stat.st_size, stat.st_mtime_ns)
                    if self._seen.get(key) == state:
                        continue
                    try:
                        data = path.read_bytes()
                    except OSError:
                        continue
                    self._seen[key] = state
                    subfolder = relative.parent.as_posix()
                    found.append((kind, "" if subfolder == "." else subfolder, name, data))
        return found


def _free_name(folder: Path, name: str) -> str:
    """``name`` if free in ``folder``; else the next free ``prefix_NNNNN_.ext`` counter, or
    ``stem-N.ext`` for names without one."""
    if not (folder / name).exists():
        return name
    match = _COUNTER.match(name)
    if match:
        counter = int(match.group("counter")) + 1
        width = len(match.group("counter"))
        while True:
            candidate = f"{match.group('prefix')}{counter:0{width}}{match.group('suffix')}"
            if not (folder / candidate).exists():
                return candidate
            counter += 1
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    number = 2
    while True:
        candidate = f"{stem}-{number}{'.' + extension if dot else ''}"
        if not (folder / candidate).exists():
            return candidate
        number += 1


class FileNames:
    """Where each worker's file landed at the front: (kind, subfolder, worker's name) ->
    the front's name. Bounded (oldest forgotten first)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._names: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._limit = limit

    def set(self, kind: str, subfolder: str, worker_name: str, front_name: str) -> None:
        self._names[(kind, subfolder, worker_name)] = front_name
        self._names.move_to_end((kind, subfolder, worker_name))
        while len(self._names) > self._limit:
            self._names.popitem(last=False)

    def get(self, kind: str, subfolder: str, worker_name: str) -> str | None:
        return self._names.get((kind, subfolder, worker_name))

    def rewrite(self, value: Any) -> Any:
        """``value`` with every file reference renamed to the front's name (a copy where changed)."""
        if isinstance(value, list):
            return [self.rewrite(item) for item in value]
        if not isinstance(value, dict):
            return value
        copy = {key: self.rewrite(item) for key, item in value.items()}
        kind, name = copy.get("type"), copy.get("filename")
        if kind in SHIPPED and isinstance(name, str):
            renamed = self.get(kind, str(copy.get("subfolder") or ""), name)
            if renamed is not None:
                copy["filename"] = renamed
        return copy


# One lock for every placement: two workers finishing at once must not pick the same free name.
_PLACE_LOCK = threading.Lock()


def place_file(roots: dict[str, Path], kind: str, subfolder: str, name: str, data: bytes) -> Path | None:
    """Writes a shipped file under the front's folder for ``kind``; returns where (None if
    the name would leave the folder). A taken name gets a free one (see ``_free_name``)."""
    root = roots.get(kind)
    if root is None or "/" in name or "\\" in name:
        return None
    folder = _inside(root, subfolder) if subfolder else root.resolve()
    if folder is None or _inside(root, f"{subfolder}/{name}" if subfolder else name) is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    with _PLACE_LOCK:
        target = folder / _free_name(folder, name)
        temporary = target.with_name(target.name + ".part")
        temporary.write_bytes(data)
        temporary.replace(target)
    return target


class EncodedImage:
    """A preview already encoded on the worker: quacks like the PIL image that
    ``latentgraph_server.previews.encode_image`` saves, so the front sends its bytes as they are
    (a JPEG of a few KiB travels instead of raw pixels)."""

    def __init__(self, data: bytes, image_format: str) -> None:
        self.data = data
        self.format = image_format

    def convert(self, mode: str) -> EncodedImage:
        return self

    def save(self, buffer: Any, format: str, **options: Any) -> None:  # noqa: A002 - PIL's name
        buffer.write(self.data)


def named_files(value: Any, roots: dict[str, Path]) -> set[Path]:
    """The front's paths (resolved) of every ``{"filename", "subfolder", "type"}`` reference to a
    shipped folder in ``value`` (an ``executed`` event's data, a history's outputs)."""
    found: set[Path] = set()
    if isinstance(value, list):
        for item in value:
            found |= named_files(item, roots)
    elif isinstance(value, dict):
        for item in value.values():
            found |= named_files(item, roots)
        kind, name = value.get("type"), value.get("filename")
        root = roots.get(kind) if isinstance(kind, str) else None
        if root is not None and isinstance(name, str):
            subfolder = str(value.get("subfolder") or "")
            path = _inside(root, f"{subfolder}/{name}" if subfolder else name)
            if path is not None:
                found.add(path)
    return found


class Announced:
    """What the lost runs of a prompt already told its client: prompt id -> node id -> the
    ``executed`` event's data, its file names as the front stored them. A worker lost mid-prompt
    leaves its client holding those outputs: the run that replaces it sends no second
    ``executed`` for those nodes (it drops its own copies of their files) and the prompt's
    history names the files the client was given. Bounded (oldest prompt forgotten first)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._prompts: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()
        self._limit = limit

    def add(self, prompt_id: str, executed: dict[str, dict[str, Any]]) -> None:
        if not executed:
            return
        with self._lock:
            self._prompts.setdefault(prompt_id, {}).update(executed)
            self._prompts.move_to_end(prompt_id)
            while len(self._prompts) > self._limit:
                self._prompts.popitem(last=False)

    def get(self, prompt_id: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._prompts.get(prompt_id, {}))

    def pop(self, prompt_id: str) -> dict[str, dict[str, Any]]:
        """The prompt's announced outputs, forgotten (its run ended)."""
        with self._lock:
            return self._prompts.pop(prompt_id, {})


def history_outputs(announced: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``outputs`` and ``meta`` history entries (as ``latentgraph_server.worker`` writes them) for
    announced ``executed`` events."""
    outputs = {node: data.get("output") for node, data in announced.items()}
    meta = {node: {"node_id": node, "display_node": data.get("display_node", node), "parent_node": None,
                   "real_node_id": node} for node, data in announced.items()}
    return outputs, meta
