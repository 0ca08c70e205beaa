"""Cheap latent -> RGB previews: a linear projection per latent family.

The factors are the published least-squares fits from a 4-channel SD latent to RGB (as used
by ComfyUI's "Latent2RGB" previewer): RGB = latent^T @ factors + bias, then [-1, 1] is mapped
to [0, 255].  They apply to latents in the model's space (after multiplying the VAE
output by the VAE scale factor), i.e. what the sampler's ``denoised`` is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

# [4 latent channels, 3 colours (R, G, B)]
SD15_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SD15_BIAS = (0.0, 0.0, 0.0)

SDXL_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_BIAS = (0.1084, -0.0175, -0.0011)

# SD2.x shares SD1.x's VAE and latent space.
FACTORS = {"sd1": (SD15_FACTORS, SD15_BIAS), "sd2": (SD15_FACTORS, SD15_BIAS), "sdxl": (SDXL_FACTORS, SDXL_BIAS)}


def latent_to_rgb(latent: torch.Tensor, family: str = "sd1", max_size: int | None = None) -> np.ndarray:
    """Project one latent [4, h, w] (or [1, 4, h, w]) to a uint8 RGB array [h, w, 3].

    ``family``: "sd1", "sd2" or "sdxl".  ``max_size`` shrinks the result (nearest pixels)
    so that its longer side is at most that many pixels.
    """
    if family not in FACTORS:
        raise ValueError(f"no preview factors for latent family {family!r}; known: {', '.join(FACTORS)}")
    if latent.ndim == 4:
        latent = latent[0]
    if latent.ndim != 3 or latent.shape[0] != 4:
        raise ValueError(f"expected a [4, h, w] latent, got shape {tuple(latent.shape)}")
    factors, bias = FACTORS[family]
    weight = torch.tensor(factors, dtype=torch.float32)
    rgb = latent.detach().float().cpu().permute(1, 2, 0) @ weight + torch.tensor(bias)
    rgb = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    if max_size is not None and max(rgb.shape[:2]) > max_size:
        step = -(-max(rgb.shape[:2]) // max_size)
        rgb = rgb[::step, ::step]
    return rgb


# A better previewer the application may install (the server's --preview-method taesd:
# nodes/sampling/taesd.py): called as previewer(latent, family, max_size) for its families.
_previewer: Any = None


def set_previewer(previewer: Any) -> None:
    """Installs (or, with None, removes) a previewer with a ``families()`` method."""
    global _previewer
    _previewer = previewer


def latent_to_image(latent: torch.Tensor, family: str = "sd1", max_size: int | None = None) -> Image.Image:
    """The installed previewer's picture of a latent, else :func:`latent_to_rgb`'s, as a PIL
    RGB image (for JPEG preview frames)."""
    previewer = _previewer
    if previewer is not None and family in previewer.families():
        return previewer(latent, family, max_size)
    return Image.fromarray(latent_to_rgb(latent, family, max_size), mode="RGB")
