"""Choosing where models run (CUDA, then Apple's MPS, then the CPU) and in which dtype."""

from __future__ import annotations

from collections.abc import Mapping
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


def model_dtypes(services: Mapping[str, Any], device: torch.device) -> dict[str, torch.dtype]:
    """The dtype of each model part, ``{"unet", "vae", "text"}``, from the runtime's settings.

    ``services["dtype"]`` applies to every part (``--force-fp16``/``--force-fp32``);
    ``services["unet_dtype"]``/``["vae_dtype"]``/``["text_enc_dtype"]`` override one part
    (``--bf16-unet``, ``--fp32-vae``, ``--fp16-text-enc``...). Unset: fp16 on GPUs, fp32 on
    the CPU.
    """
    base = resolve_dtype(services.get("dtype"), device)

    def part(key: str) -> torch.dtype:
        return resolve_dtype(services[key], device) if services.get(key) else base

    return {"unet": part("unet_dtype"), "vae": part("vae_dtype"), "text": part("text_enc_dtype")}

