"""Latent transforms: flip, rotate and crop a LATENT's ``samples`` [B, C, h, w].

As in ComfyUI, only ``samples`` changes; a ``noise_mask`` is passed on unchanged.
Pixel sizes and offsets are divided by 8 (the VAE's downscale).
"""

from __future__ import annotations

from graph import Input, Node, Output
from nodes.image import MAX_RESOLUTION

ROTATIONS = {"none": 0, "90 degrees": 1, "180 degrees": 2, "270 degrees": 3}
FLIPS = {"x-axis: vertically": 2, "y-axis: horizontally": 3}  # the dimension flipped


class LatentRotate(Node):
    """Rotates the latent clockwise by quarter turns."""

    category = "latent/transform"
    samples = Input("LATENT")
    rotation = Input(choices=list(ROTATIONS))
    outputs = (Output("LATENT"),)

    def execute(self, samples: dict, rotation: str) -> tuple:
        import torch

        turned = torch.rot90(samples["samples"], k=ROTATIONS[rotation], dims=[3, 2])
        return ({**samples, "samples": turned},)


class LatentFlip(Node):
    """Mirrors the latent: top to bottom (x-axis) or left to right (y-axis)."""

    category = "latent/transform"
    samples = Input("LATENT")
    flip_method = Input(choices=list(FLIPS))
    outputs = (Output("LATENT"),)

    def execute(self, samples: dict, flip_method: str) -> tuple:
        import torch

        return ({**samples, "samples": torch.flip(samples["samples"], dims=[FLIPS[flip_method]])},)


class LatentCrop(Node):
    """Crops the latent to ``width`` x ``height`` pixels at (``x``, ``y``), kept inside it."""

    category = "latent/transform"
    samples = Input("LATENT")
    width = Input("INT", default=512, min=64, max=MAX_RESOLUTION, step=8)
    height = Input("INT", default=512, min=64, max=MAX_RESOLUTION, step=8)
    x = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=8)
    y = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=8)
    outputs = (Output("LATENT"),)

    def execute(self, samples: dict, width: int, height: int, x: int, y: int) -> tuple:
        latent = samples["samples"]
        rows, cols = latent.shape[-2:]
        # At least 8 latent pixels stay in view, as ComfyUI clamps the offset.
        left, top = min(x // 8, max(cols - 8, 0)), min(y // 8, max(rows - 8, 0))
        cropped = latent[..., top:top + height // 8, left:left + width // 8]
        return ({**samples, "samples": cropped.clone()},)
