"""The values behind the ``MODEL``, ``CLIP`` and ``VAE`` types.

One loaded checkpoint gives three handles that share its modules. Handles are never
mutated once made: a change (a CLIP skip, a LoRA) returns a new handle, so a cached model
stays exactly as loaded. A LoRA'd handle's ``unet``/``encoders`` are patched views that
share every base weight (``nodes.lora``); ``patches`` lists the LoRAs applied, in order,
and ``base_unet``/``base_encoders`` keep the unpatched modules. Each handle reports
``size_bytes`` (for a patched handle: only what the patches add) so the output cache can
count it against its budget, and ``modules()``, what must be on its device to run it: the
protocol every model handle follows (``nodes.sd.runtime.ModelHandle``).
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

    ``prediction`` is what the UNet's output means: "eps", "v", "x0" or "lcm"
    (:class:`~nodes.sampling.DiscreteDenoiser`); ``schedule`` is the noise schedule sampling
    uses and ``base_schedule`` the one the checkpoint was loaded with, when a
    ModelSamplingDiscrete node replaced it. ``latent_scale`` multiplies VAE latents into
    the UNet's space (0.18215 SD1/SD2, 0.13025 SDXL); ``in_channels`` is 9 for inpainting
    UNets. ``unet`` is what sampling calls: the loaded UNet, or a LoRA-patched view of it.
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
    patches: tuple[Any, ...] = ()
    base_unet: Any = None
    base_schedule: DiscreteSchedule | None = None

    @property
    def original_unet(self) -> Any:
        """The UNet as loaded, without any LoRA."""
        return self.base_unet if self.base_unet is not None else self.unet

    @property
    def original_schedule(self) -> DiscreteSchedule:
        """The noise schedule as loaded, before any ModelSamplingDiscrete."""
        return self.base_schedule if self.base_schedule is not None else self.schedule

    def modules(self) -> tuple[Any, ...]:
        return (self.unet,)

    def size_bytes(self) -> int:
        return module_bytes(self.unet) - (module_bytes(self.base_unet) if self.base_unet is not None else 0)


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
    patches: tuple[Any, ...] = ()
    base_encoders: tuple[Any, ...] | None = None

    @property
    def original_encoders(self) -> tuple[Any, ...]:
        """The text encoders as loaded, without any LoRA."""
        return self.base_encoders if self.base_encoders is not None else self.encoders

    def with_last_layer(self, stop_at_layer: int) -> ClipHandle:
        return replace(self, stop_at_layer=stop_at_layer)

    def modules(self) -> tuple[Any, ...]:
        return tuple(self.encoders)

    def size_bytes(self) -> int:
        base = module_bytes(*self.base_encoders) if self.base_encoders is not None else 0
        return module_bytes(*self.encoders) - base


@dataclass(frozen=True)
class VaeHandle:
    """VAE: images [B, 3, H, W] in -1..1 <-> unscaled latents [B, 4, H/8, W/8]."""

    cache_pool: ClassVar[str] = "models"  # the output cache's pool (graph.cache): POST /free unloads it

    vae: Any
    family: str
    device: torch.device
    dtype: torch.dtype

    def modules(self) -> tuple[Any, ...]:
        return (self.vae,)

    def size_bytes(self) -> int:
        return module_bytes(self.vae)
