"""Open a weights file as a key -> tensor reader, refusing unsafe formats.

``.safetensors`` files are memory-mapped (``safe_open``): only requested tensors are read,
each placed straight on the target device. On the CPU, a tensor kept in its stored dtype
(every weight matrix of an fp16 file computing in fp32, see ``cast_weights``, or every
tensor of an fp32 file) is a zero-copy view of the (copy-on-write) mapping: the load reads
nothing, pages come in from the page cache as the model first runs, the process shares
them with the page cache instead of holding a second copy, and under memory pressure the
kernel can drop them and read them again. (The price: a checkpoint rewritten *in place*
while loaded changes, or on truncation faults, under the model; tools that write a new
file and rename it are safe.) A tensor whose dtype changes on the CPU is read with a plain
file read instead (``safetensors_direct``), so that the file's pages do not stay resident
next to the converted copy. ``.ckpt``/``.pt``/``.pth`` pickles are read only through
``torch.load(weights_only=True)``, which refuses arbitrary objects. Anything else is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from nodes.models.errors import UnsafeFormatError
from nodes.models.safetensors_direct import ConvertingReader, TensorEntry, read_index

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
    _reader: ConvertingReader | None = field(repr=False, default=None)
    _index: dict[str, TensorEntry] = field(repr=False, default_factory=dict)

    def read(self, key: str, dtype: torch.dtype | None = None, keep_narrow: bool = False) -> torch.Tensor:
        """The tensor stored under ``key`` on ``device``; KeyError if absent.

        Floating tensors come in ``dtype`` (default: the source's ``dtype``), except with
        ``keep_narrow`` when the stored dtype has fewer bits: then they keep it (see
        ``cast_weights``). Integer tensors keep their dtype.
        """
        if key not in self.shapes:
            raise KeyError(key)
        wanted = dtype or self.dtype
        entry = self._index.get(key)
        if entry is not None:  # a safetensors file read to the CPU
            target = _target_dtype(entry.dtype, wanted, keep_narrow)
            if target != entry.dtype:
                return self._reader.read(entry, target)
        tensor = self._tensors[key] if self._tensors is not None else self._handle.get_tensor(key)
        return tensor.to(device=self.device, dtype=_target_dtype(tensor.dtype, wanted, keep_narrow))


def _target_dtype(stored: torch.dtype, wanted: torch.dtype, keep_narrow: bool) -> torch.dtype:
    if not stored.is_floating_point:
        return stored
    if keep_narrow and torch.finfo(stored).bits < torch.finfo(wanted).bits:
        return stored
    return wanted


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
        with safe_open(str(path), framework="pt", device=open_device) as handle, open(path, "rb") as fh:
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
            index = read_index(fh) if device.type == "cpu" else {}
            yield StateSource(
                shapes, dict(handle.metadata() or {}), device, dtype, _handle=handle, _reader=ConvertingReader(fh),
                _index=index,
            )
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
