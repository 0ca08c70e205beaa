"""Mask nodes, as ComfyUI's: make, convert, invert, threshold and grow masks.

A MASK is a float tensor ``[B, H, W]`` (or ``[H, W]``) in 0..1, 1 where something is to
happen (inpainting: to be regenerated). An IMAGE is ``[B, H, W, C]`` in 0..1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph import Input, Node, Output
from nodes import memory_estimates
from nodes.image import MAX_RESOLUTION

CHANNELS = ["red", "green", "blue", "alpha"]


def mask_4d(mask: Any) -> Any:
    """MASK [H, W] or [B, H, W] (or [B, 1, H, W]) -> float [B, 1, H, W]."""
    if mask.ndim not in (2, 3, 4):
        raise ValueError(f"a MASK must be [H, W] or [B, H, W], got shape {tuple(mask.shape)}")
    return mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])


class SolidMask(Node):
    """A mask of one value everywhere."""

    category = "mask"
    value = Input("FLOAT", default=1.0, min=0.0, max=1.0, step=0.01)
    width = Input("INT", default=512, min=1, max=MAX_RESOLUTION, step=1)
    height = Input("INT", default=512, min=1, max=MAX_RESOLUTION, step=1)
    outputs = (Output("MASK"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.solid_mask(inputs)

    def execute(self, value: float, width: int, height: int) -> tuple:
        import torch

        return (torch.full((1, height, width), float(value), dtype=torch.float32),)


class InvertMask(Node):
    """1 - mask."""

    category = "mask"
    mask = Input("MASK")
    outputs = (Output("MASK"),)

    def execute(self, mask: Any) -> tuple:
        return (1.0 - mask,)


class ThresholdMask(Node):
    """1 where the mask is above ``value``, else 0."""

    category = "mask"
    mask = Input("MASK")
    value = Input("FLOAT", default=0.5, min=0.0, max=1.0, step=0.01)
    outputs = (Output("MASK"),)

    def execute(self, mask: Any, value: float) -> tuple:
        return ((mask > value).float(),)


class ImageToMask(Node):
    """One channel of an image as a mask (the channel must exist: no alpha in an RGB image)."""

    category = "mask"
    image = Input("IMAGE")
    channel = Input(choices=CHANNELS)
    outputs = (Output("MASK"),)

    def execute(self, image: Any, channel: str) -> tuple:
        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"the image has {image.shape[-1]} channels, no {channel} channel")
        return (image[..., index].clone(),)


class MaskToImage(Node):
    """A mask as a grey RGB image."""

    category = "mask"
    mask = Input("MASK")
    outputs = (Output("IMAGE"),)

    def execute(self, mask: Any) -> tuple:
        return (mask_4d(mask)[:, 0, :, :, None].expand(-1, -1, -1, 3).clone(),)


class GrowMask(Node):
    """Grows the mask by ``expand`` pixels (shrinks it when negative), one pixel per step.

    Each step takes the maximum (shrinking: minimum) over a pixel's 3x3 neighbourhood;
    with ``tapered_corners`` the neighbourhood leaves out the four diagonal pixels, so
    corners grow rounded rather than square.
    """

    category = "mask"
    mask = Input("MASK")
    expand = Input("INT", default=0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1)
    tapered_corners = Input("BOOLEAN", default=True)
    outputs = (Output("MASK"),)

    def execute(self, mask: Any, expand: int, tapered_corners: bool) -> tuple:
        import torch
        import torch.nn.functional as F

        grown = mask_4d(mask)
        sign = 1.0 if expand >= 0 else -1.0
        grown = grown * sign  # shrinking is growing the negated mask
        for _ in range(abs(expand)):
            if tapered_corners:
                padded = F.pad(grown, (1, 1, 1, 1), mode="replicate")
                grown = torch.stack([padded[..., 1:-1, 1:-1], padded[..., :-2, 1:-1], padded[..., 2:, 1:-1],
                                     padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]]).amax(0)
            else:
                grown = F.max_pool2d(F.pad(grown, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return ((grown * sign).squeeze(1),)

