"""The values behind the ``MODEL``, ``CLIP`` and ``VAE`` types.

One loaded checkpoint gives three handles that share its modules. Handles are never
mutated once made: a change (a CLIP skip, later a LoRA patch) returns a new handle, so a
cached model stays exactly as loaded. Each reports ``size_bytes`` so the output cache can
count it against its budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from nodes.sampling import DiscreteSchedule


def module_bytes(*modules: torch.nn.Module | None) -> int:
    """Bytes held by the parameters and buffers of some modules."""
    total = 0
    for module in modules:
        if module is None:
            continue
        total += sum(t.numel() * t.element_size() for t in module.parameters())
        total += sum(t.numel() * t.element_size() for t in module.buffers())
    return total


@dataclass(frozen=True)
class ModelHandle:
    """MODEL: a denoising UNet and what sampling needs to know about it.

    ``prediction`` is "eps" or "v"; ``latent_scale`` multiplies VAE latents into the UNet's
    space (0.18215 SD1/SD2, 0.13025 SDXL); ``in_channels`` is 9 for inpainting UNets.
    """

    cache_pool: ClassVar[str] = "models"  # the output cache's pool (graph.cache): POST /free unloads it

    unet: Any
    family: str
    prediction: str
    schedule: DiscreteSchedule
    latent_scale: float
    in_channels: int
    device: torch.device
    dtype: torch.dtype
    source: Path

    def size_bytes(self) -> int:
        return module_bytes(self.unet)


@dataclass(frozen=True)
class ClipHandle:
    """CLIP: the text encoder(s) and tokenizer(s) of a checkpoint.

    ``layouts`` says how each encoder pads ("hf": <|endoftext|>, "open_clip": id 0).
    ``stop_at_layer`` is CLIPSetLastLayer's value: -1 uses the last layer, -2 the one
    before, and so on.
    """

    cache_pool: ClassVar[str] = "models"  # the output cache's pool (graph.cache): POST /free unloads it

    encoders: tuple[Any, ...]
    tokenizers: tuple[Any, ...]
    layouts: tuple[str, ...]
    family: str
    device: torch.device
    stop_at_layer: int = -1
    embedding_folders: tuple[Path, ...] = field(default=())

    def with_last_layer(self, stop_at_layer: int) -> ClipHandle:
        return replace(self, stop_at_layer=stop_at_layer)

    def size_bytes(self) -> int:
        return module_bytes(*self.encoders)


@dataclass(frozen=True)
class VaeHandle:
    """VAE: images [B, 3, H, W] in -1..1 <-> unscaled latents [B, 4, H/8, W/8]."""

    cache_pool: ClassVar[str] = "models"  # the output cache's pool (graph.cache): POST /free unloads it

    vae: Any
    family: str
    device: torch.device
    dtype: torch.dtype

    def size_bytes(self) -> int:
        return module_bytes(self.vae)
