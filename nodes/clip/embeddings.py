"""Textual-inversion embeddings: finding ``embedding:NAME`` files and reading their vectors.

Files live in the ``embeddings`` model folders (``models/embeddings`` plus
``extra_model_paths.yaml``). ``NAME`` may omit the extension (``.safetensors``, ``.pt``,
``.bin`` are tried in that order) and may name a file in a subfolder, with or without the
subfolder (``embedding:style`` finds ``sdxl/style.safetensors``), as in ComfyUI.
``.safetensors`` files are read directly; ``.pt``/``.bin`` only through
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.

Formats, all giving ``[N, D]`` vectors (N tokens of width D) per text encoder:
  - A1111 ``.pt``: ``{"string_to_param": {"*": tensor [N, D]}, "name": ..., ...}``;
  - a single tensor under any key (``emb_params`` from A1111's safetensors export, ...);
  - SDXL: ``clip_l`` [N, 768] for the first encoder and ``clip_g`` [N, 1280] for the
    second (SD2 files may use ``clip_h``); a file with several tensors is matched to an
    encoder by these keys, then by width.

Decisions (ComfyUI warns and carries on in these cases; so do we, through the
``latentgraph.embeddings`` logger, so a server or CLI user sees it): an unknown name, an
unreadable file, or a file with no vectors of the right width for *every* text encoder of
the CLIP (e.g. an SD1.5 embedding used with SDXL) is dropped from the prompt with a
warning. Unlike ComfyUI, which then applies such an embedding to the encoders it fits and
drops it from the others, we drop it from all, so SDXL's two token streams stay aligned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from graph.paths import UnsafePathError, check_relative, join_following_links, list_files

EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")
# The key each text encoder's vectors are stored under, per family, in encoder order.
ENCODER_KEYS = {"sd1": ("clip_l",), "sd2": ("clip_h",), "sdxl": ("clip_l", "clip_g")}

log = logging.getLogger("latentgraph.embeddings")


class EmbeddingError(ValueError):
    """An embedding file that cannot be used (unreadable, refused, or without suitable vectors)."""


@dataclass(frozen=True)
class Embedding:
    """One loaded embedding: ``vectors[i]`` is ``[N, D_i]`` float32 for text encoder ``i``."""

    name: str
    path: Path
    vectors: tuple[torch.Tensor, ...]


def find_embedding(folders: Iterable[Path], name: str) -> Path | None:
    """The file ``embedding:name`` refers to, or None.

    Each folder is searched for ``name`` itself and ``name`` plus each extension; failing
    that, for a file at that relative path in any of its subfolders (shallowest first).
    Raises ``UnsafePathError`` for names that would leave the folder (``..``, absolute).
    """
    check_relative(name, what="embedding name")
    wanted = [name] + [name + ext for ext in EMBEDDING_EXTENSIONS]
    for folder in folders:
        for candidate in wanted:
            path = join_following_links(folder, candidate)  # a model folder: links followed
            if path.is_file() and path.suffix.lower() in EMBEDDING_EXTENSIONS:
                return path
    for folder in folders:
        ranked = [(rank, rel) for rel in list_files(folder, EMBEDDING_EXTENSIONS, follow_links=True)
                  if (rank := _nested_rank(rel, wanted)) is not None]
        if ranked:
            return join_following_links(folder, min(ranked)[1])
    return None


def _nested_rank(rel: str, wanted: list[str]) -> tuple[int, int] | None:
    """How well a file at ``rel`` (in some subfolder) matches: (depth, extension order), or None."""
    for order, candidate in enumerate(wanted):
        if rel.endswith("/" + candidate):
            return rel.count("/"), order
    return None


def read_embedding_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an embedding file, by key; A1111 files give ``{"string_to_param": [N, D]}``.

    Raises ``EmbeddingError`` when the file cannot be read or ``torch.load(weights_only=True)``
    refuses it.
    """
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            data: object = load_file(str(path), device="cpu")
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise several unrelated types
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EmbeddingError(f"cannot read {path.name}: {first_line}") from exc
    if not isinstance(data, dict):
        raise EmbeddingError(f"{path.name}: expected a dictionary of tensors, found {type(data).__name__}")
    params = data.get("string_to_param")
    if isinstance(params, dict):
        found = [t for t in params.values() if isinstance(t, torch.Tensor)]
        if not found:
            raise EmbeddingError(f"{path.name}: 'string_to_param' holds no tensor")
        return {"string_to_param": found[0]}
    tensors = {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    if not tensors:
        raise EmbeddingError(f"{path.name}: no floating-point tensors found")
    return tensors


def select_vectors(tensors: dict[str, torch.Tensor], key: str, width: int) -> torch.Tensor:
    """The ``[N, width]`` float32 vectors for one text encoder, or ``EmbeddingError``.

    Preference: the encoder's ``key`` (``clip_l``/``clip_g``/``clip_h``), A1111's
    ``string_to_param``, ``emb_params``, the only tensor, else the only tensor of that width.
    """
    tensor = None
    for name in (key, "string_to_param", "emb_params"):
        if name in tensors:
            tensor = tensors[name]
            break
    if tensor is None and len(tensors) == 1:
        tensor = next(iter(tensors.values()))
    if tensor is None:
        fitting = [t for t in tensors.values() if t.ndim in (1, 2) and t.shape[-1] == width]
        if len(fitting) != 1:
            raise EmbeddingError(f"no tensor named {key!r} and {len(fitting)} tensors of width {width} among "
                                 f"{sorted(tensors)}")
        tensor = fitting[0]
    if tensor.ndim == 0 or tensor.shape[-1] != width:
        raise EmbeddingError(f"its vectors have width {tensor.shape[-1] if tensor.ndim else 0}, "
                             f"the text encoder ({key}) needs {width}")
    vectors = tensor.detach().reshape(-1, width).float()
    if vectors.shape[0] == 0:
        raise EmbeddingError("it holds no vectors")
    return vectors


def load_embedding(folders: Sequence[Path], name: str, family: str, widths: Sequence[int]) -> Embedding | None:
    """Loads ``embedding:name`` for a CLIP with text encoders of ``widths``; None (after a
    logged warning) when it is missing, unreadable, or unusable with this CLIP."""
    try:
        path = find_embedding(folders, name)
    except UnsafePathError as exc:
        log.warning("embedding:%s ignored: %s", name, exc)
        return None
    if path is None:
        where = ", ".join(str(f) for f in folders) or "(no embeddings folder configured)"
        log.warning("embedding:%s does not exist in %s; it is left out of the prompt", name, where)
        return None
    keys = ENCODER_KEYS.get(family, ("clip_l",) * len(widths))
    if len(keys) != len(widths):
        keys = tuple(f"clip_{i}" for i in range(len(widths)))
    try:
        tensors = read_embedding_tensors(path)
        vectors = tuple(select_vectors(tensors, key, width) for key, width in zip(keys, widths, strict=True))
        if len({v.shape[0] for v in vectors}) > 1:
            raise EmbeddingError(f"its encoders have different token counts {[v.shape[0] for v in vectors]}")
    except EmbeddingError as exc:
        log.warning("embedding:%s (%s) ignored: %s", name, path.name, exc)
        return None
    return Embedding(name, path, vectors)


def embedding_files_state(folders: Sequence[Path], names: Iterable[str] | None) -> list:
    """What the cache needs to notice changed embeddings: ``[name, path, size, mtime_ns]`` per
    name (``[name, None]`` when missing); ``names=None`` describes every embedding file."""
    if names is None:
        state = []
        for folder in folders:
            for rel in list_files(folder, EMBEDDING_EXTENSIONS):
                stat = (Path(folder) / rel).stat()
                state.append([str(folder), rel, stat.st_size, stat.st_mtime_ns])
        return state
    out: list = []
    for name in names:
        try:
            path = find_embedding(folders, name)
        except UnsafePathError:
            path = None
        if path is None:
            out.append([name, None])
        else:
            stat = path.stat()
            out.append([name, str(path), stat.st_size, stat.st_mtime_ns])
    return out
