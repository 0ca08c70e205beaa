"""CLIP_VISION and CLIP_VISION_OUTPUT: a loaded image encoder, and what it makes of images.

``ClipVisionHandle`` is the CLIP_VISION value (a model handle: the output cache's
``"models"`` pool, ``size_bytes()``, ``modules()``). ``encode_image`` preprocesses as
ComfyUI's ``clip_preprocess`` (shortest side to the model's size, bicubic with
antialiasing, centre crop or a plain squash, 8-bit rounding, CLIP mean/std) and returns a
``ClipVisionOutput`` with the fields ComfyUI's ``Output`` carries, readable as attributes
or by key (custom nodes do both).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from nodes.sd.handles import module_bytes


@dataclass(frozen=True)
class ClipVisionHandle:
    """CLIP_VISION: a transformers ``CLIPVisionModelWithProjection`` on ``device`` computing
    in ``dtype``; ``image_size`` its input side in pixels, ``mean``/``std`` its normalisation."""

    cache_pool: ClassVar[str] = "models"  # the output cache's pool: POST /free unloads it

    model: Any
    device: torch.device
    dtype: torch.dtype
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: Path | None = None

    def size_bytes(self) -> int:
        return module_bytes(self.model)

    def modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.model,)


@dataclass(frozen=True)
class ClipVisionOutput:
    """CLIP_VISION_OUTPUT, float32 on the CPU, for a batch of B images:

    ``image_embeds`` [B, P] (the projected pooled output, what unCLIP and revision use),
    ``last_hidden_state`` [B, T, D] (the last layer, before the final layer norm),
    ``penultimate_hidden_states`` [B, T, D] (the layer before it), ``mm_projected`` None
    (ComfyUI's slot for LLaVA-style projectors). ``T`` is the patch count plus one.
    """

    image_embeds: torch.Tensor
    last_hidden_state: torch.Tensor
    penultimate_hidden_states: torch.Tensor
    mm_projected: Any = None

    def __getitem__(self, key: str) -> Any:
        if key not in ("image_embeds", "last_hidden_state", "penultimate_hidden_states", "mm_projected"):
            raise KeyError(key)
        return getattr(self, key)

    def size_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in
                   (self.image_embeds, self.last_hidden_state, self.penultimate_hidden_states))


def clip_preprocess(image: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                    crop: bool = True) -> torch.Tensor:
    """IMAGE [B, H, W, C] (0..1; channels past the third dropped) -> pixel values [B, 3, size, size].

    With ``crop`` the shortest side is scaled to ``size`` and the centre cut out; without,
    the image is squashed to ``size`` x ``size``. Resizing is bicubic with antialiasing,
    then values are rounded to 8 bits (as a saved image would be) and normalised.
    """
    if image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"expected an IMAGE [batch, height, width, 3], got shape {list(image.shape)}")
    pixels = image[..., :3].movedim(-1, 1)
    if pixels.shape[-2:] != (size, size):
        height, width = pixels.shape[-2:]
        if crop:
            scale = size / min(height, width)
            target = (round(scale * height), round(scale * width))
        else:
            target = (size, size)
        pixels = F.interpolate(pixels, size=target, mode="bicubic", antialias=True)
        top, left = (pixels.shape[-2] - size) // 2, (pixels.shape[-1] - size) // 2
        pixels = pixels[..., top:top + size, left:left + size]
    pixels = torch.clip(255.0 * pixels, 0, 255).round() / 255.0
    mean_t = torch.tensor(mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t


def encode_image(handle: ClipVisionHandle, image: torch.Tensor, crop: bool = True) -> ClipVisionOutput:
    """Runs the encoder on an IMAGE batch [B, H, W, 3]; see :class:`ClipVisionOutput`."""
    pixels = clip_preprocess(image.to(handle.device, torch.float32), handle.image_size, handle.mean, handle.std, crop)
    out = handle.model(pixel_values=pixels.to(handle.dtype), output_hidden_states=True)

    def cpu(t: torch.Tensor) -> torch.Tensor:
        return t.float().cpu()

    return ClipVisionOutput(image_embeds=cpu(out.image_embeds), last_hidden_state=cpu(out.last_hidden_state),
                            penultimate_hidden_states=cpu(out.hidden_states[-2]))


def working_bytes(batch: int, handle: ClipVisionHandle) -> int:
    """A rough bound on the encoder's activations for ``batch`` images (bytes): the hidden
    states of every layer (kept for the penultimate output) and one layer's attention and MLP."""
    config = handle.model.config
    tokens = (handle.image_size // config.patch_size) ** 2 + 1
    per_token = config.hidden_size * (config.num_hidden_layers + 2) + config.intermediate_size
    attention = config.num_attention_heads * tokens
    return batch * tokens * (per_token + attention) * torch.finfo(handle.dtype).bits // 8
