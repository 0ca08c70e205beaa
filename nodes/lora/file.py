"""Read a LoRA file into CPU tensors, refusing unsafe formats."""

from __future__ import annotations

from pathlib import Path

import torch

from nodes.models.state_source import open_state


def read_lora_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a LoRA file, on the CPU, floats as float32.

    ``.safetensors`` is memory-mapped; ``.ckpt``/``.pt``/``.pth``/``.bin`` are read only
    through ``torch.load(weights_only=True)`` (never unpickled otherwise); anything else
    raises ``nodes.models.errors.UnsafeFormatError``.
    """
    with open_state(path, "cpu", torch.float32) as source:
        return {key: source.read(key) for key in source.shapes}
