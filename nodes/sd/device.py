"""Choosing where models run: CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

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
