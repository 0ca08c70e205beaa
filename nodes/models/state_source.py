"""Open a weights file as a key -> tensor reader, refusing unsafe formats.

``.safetensors`` files are memory-mapped (``safe_open``): only requested tensors are read,
each converted straight to the target dtype and device. ``.ckpt``/``.pt``/``.pth`` pickles
are read only through ``torch.load(weights_only=True)``, which refuses arbitrary objects.
Anything else is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from nodes.models.errors import UnsafeFormatError

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


@dataclass
class StateSource:
    """Tensors of one file, read on demand.

    ``shapes``: every key's shape. ``metadata``: safetensors string metadata (empty for
    pickles). ``read(key)`` returns the tensor on ``device``, floating tensors cast to
    ``dtype``; integer tensors keep their dtype.
    """

    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str]
    device: torch.device
    dtype: torch.dtype
    _handle: object = field(repr=False, default=None)
    _tensors: dict[str, torch.Tensor] | None = field(repr=False, default=None)

    def read(self, key: str) -> torch.Tensor:
        """The tensor stored under ``key`` on ``device`` (floats in ``dtype``); KeyError if absent."""
        if key not in self.shapes:
            raise KeyError(key)
        tensor = self._tensors[key] if self._tensors is not None else self._handle.get_tensor(key)
        if tensor.is_floating_point():
            return tensor.to(device=self.device, dtype=self.dtype)
        return tensor.to(device=self.device)


def _torch_load_safely(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises UnpicklingError and friends
        raise UnsafeFormatError(
            f"{path.name}: refused, torch.load(weights_only=True) rejects it ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Convert it to .safetensors."
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise UnsafeFormatError(f"{path.name}: not a state dict (found {type(obj).__name__})")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


@contextlib.contextmanager
def open_state(
    path: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Iterator[StateSource]:
    """Context manager yielding a ``StateSource`` for ``path``; see the module docstring."""
    path = Path(path)
    device = torch.device(device)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        # safetensors maps the file and can place tensors on CUDA directly.
        open_device = str(device) if device.type == "cuda" else "cpu"
        with safe_open(str(path), framework="pt", device=open_device) as handle:
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
            yield StateSource(shapes, dict(handle.metadata() or {}), device, dtype, _handle=handle)
        return
    if suffix in PICKLE_SUFFIXES:
        tensors = _torch_load_safely(path)
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        yield StateSource(shapes, {}, device, dtype, _tensors=tensors)
        return
    raise UnsafeFormatError(
        f"{path.name}: unsupported file type {suffix or '(none)'}; expected .safetensors "
        f"(or .ckpt/.pt/.pth readable with weights_only=True)"
    )
