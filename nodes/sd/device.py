"""Choosing where models run (CUDA, then Apple's MPS, then the CPU) and in which dtype."""

from __future__ import annotations

from typing import Any

import torch


def pick_device(force_cpu: bool = False) -> torch.device:
    """The best available device, or the CPU when ``force_cpu``."""
    if not force_cpu and torch.cuda.is_available():
        return torch.device("cuda")
    if not force_cpu and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on GPUs (half the memory, tensor cores), fp32 on the CPU (fp16 is slow there)."""
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(value: Any, device: torch.device) -> torch.dtype:
    """A dtype setting -> a torch dtype: a name in ``DTYPES``, a torch dtype, or None/"auto"
    for ``default_dtype(device)``. Raises ValueError for anything else."""
    if value is None or value == "auto":
        return default_dtype(device)
    if isinstance(value, torch.dtype):
        return value
    if value in DTYPES:
        return DTYPES[value]
    raise ValueError(f"unknown dtype {value!r}: expected auto, {', '.join(DTYPES)}")
