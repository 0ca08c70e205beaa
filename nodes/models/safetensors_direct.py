"""Read one tensor of a ``.safetensors`` file with a plain file read, no memory map.

Used when a tensor must be converted to another dtype on the CPU: reading it into a
temporary buffer and converting keeps the process's resident memory at "model + one
tensor", whereas converting from the memory map leaves every touched page of the file
mapped until the file is closed. (Same-dtype tensors are better served zero-copy by
``safe_open``.) Format: 8-byte little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}}``, then the data.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import BinaryIO

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes lie: absolute byte range ``[begin, end)`` in the file."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def read_index(fh: BinaryIO) -> dict[str, TensorEntry]:
    """Parse the header of an open ``.safetensors`` file; tensors of unlisted dtypes are skipped."""
    fh.seek(0)
    (size,) = struct.unpack("<Q", fh.read(8))
    header = json.loads(fh.read(size))
    base = 8 + size
    index = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in DTYPES:
            continue
        begin, end = info["data_offsets"]
        index[name] = TensorEntry(DTYPES[info["dtype"]], tuple(info["shape"]), base + begin, base + end)
    return index


def read_tensor(fh: BinaryIO, entry: TensorEntry) -> torch.Tensor:
    """Read one tensor into fresh CPU memory (little-endian, as safetensors stores it)."""
    buf = bytearray(entry.end - entry.begin)
    fh.seek(entry.begin)
    if fh.readinto(buf) != len(buf):
        raise OSError("safetensors file is truncated")
    if not buf:
        return torch.empty(entry.shape, dtype=entry.dtype)
    return torch.frombuffer(buf, dtype=entry.dtype).reshape(entry.shape)


class ConvertingReader:
    """Reads tensors of one open file converted to another dtype, through one reused buffer.

    Each tensor's bytes are read into a scratch buffer (kept, grown to the largest tensor
    so far, never zero-filled) and converted in one pass into a fresh uninitialised tensor
    of the target dtype: one read and one conversion per tensor, and no per-tensor
    temporary allocation whose pages the kernel must fault in and release again.
    """

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._scratch = torch.empty(0, dtype=torch.uint8)

    def read(self, entry: TensorEntry, dtype: torch.dtype) -> torch.Tensor:
        """The tensor at ``entry`` as a new CPU tensor of ``dtype``."""
        out = torch.empty(entry.shape, dtype=dtype)
        size = entry.end - entry.begin
        if size == 0:
            return out
        if self._scratch.numel() < size:
            self._scratch = torch.empty(size, dtype=torch.uint8)
        raw = self._scratch[:size]
        self._fh.seek(entry.begin)
        if self._fh.readinto(raw.numpy()) != size:
            raise OSError("safetensors file is truncated")
        out.copy_(raw.view(entry.dtype).reshape(entry.shape))
        return out
