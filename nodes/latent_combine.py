"""Latent nodes that combine latents or split and repeat batches.

A LATENT is a dict with ``samples`` [B, 4, h, w] (latent pixels = image pixels / 8), and
optionally ``noise_mask`` [B or 1, 1, H, W] and ``batch_index`` (the batch positions the
items came from, which keeps their seed noise; see ``nodes.sampling.noise.initial_noise``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from graph import Input, Node, Output
from nodes import memory_estimates
from nodes.image import MAX_RESOLUTION


class LatentComposite(Node):
    """Pastes ``samples_from`` into ``samples_to`` at ``x``, ``y`` (pixels, / 8 in the latent).

    With ``feather`` (pixels) the pasted latent fades in linearly over that many pixels
    along each of its edges that lies inside ``samples_to``.
    """

    category = "latent"
    samples_to = Input("LATENT")
    samples_from = Input("LATENT")
    x = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=8)
    y = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=8)
    feather = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=8)
    outputs = (Output("LATENT"),)

    def execute(self, samples_to: dict, samples_from: dict, x: int, y: int, feather: int) -> tuple:
        import torch

        from nodes.sampling.regions import fit_batch

        target = samples_to["samples"].clone()
        x, y, feather = x // 8, y // 8, feather // 8
        height, width = target.shape[-2:]
        source = samples_from["samples"][:, :, :max(0, height - y), :max(0, width - x)]
        h, w = source.shape[-2:]
        if h == 0 or w == 0:
            return (dict(samples_to, samples=target),)
        if source.shape[1] != target.shape[1]:
            raise ValueError(f"cannot composite {source.shape[1]}-channel latents into {target.shape[1]}-channel ones")
        source = fit_batch(source.to(target.dtype), target.shape[0])
        if feather == 0:
            target[:, :, y:y + h, x:x + w] = source
            return (dict(samples_to, samples=target),)
        steps = (torch.arange(feather, dtype=torch.float32) + 1) / feather

        def ramp(n: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
            r = torch.ones(n)
            k = min(n, feather)
            if fade_start:
                r[:k] *= steps[:k]
            if fade_end:
                r[n - k:] *= steps[:k].flip(0)
            return r

        weight = (ramp(h, y != 0, y + h < height)[:, None] * ramp(w, x != 0, x + w < width)[None, :]).to(target)
        region = target[:, :, y:y + h, x:x + w]
        target[:, :, y:y + h, x:x + w] = source * weight + region * (1.0 - weight)
        return (dict(samples_to, samples=target),)


class LatentBlend(Node):
    """``samples1 * blend_factor + samples2 * (1 - blend_factor)``; ``samples2`` is first
    resized (bicubic, centre-cropped to the aspect) when its size differs."""

    category = "_for_testing"
    samples1 = Input("LATENT")
    samples2 = Input("LATENT")
    blend_factor = Input("FLOAT", default=0.5, min=0.0, max=1.0, step=0.01)
    outputs = (Output("LATENT"),)

    def execute(self, samples1: dict, samples2: dict, blend_factor: float) -> tuple:
        from nodes.image import center_crop
        from nodes.latent import resize_latent
        from nodes.sampling.regions import fit_batch

        first, second = samples1["samples"], samples2["samples"]
        if second.shape[1] != first.shape[1]:
            raise ValueError(f"cannot blend {first.shape[1]}-channel and {second.shape[1]}-channel latents")
        if second.shape[-2:] != first.shape[-2:]:
            height, width = first.shape[-2:]
            second = resize_latent(center_crop(second, width / height, height_dim=-2), width, height, "bicubic")
        second = fit_batch(second.to(first.dtype), first.shape[0])
        return (dict(samples1, samples=first * blend_factor + second * (1.0 - blend_factor)),)


def _repeat_masks(masks: Any, batch: int) -> Any:
    """Masks repeated in turn until there is one per latent of a batch of ``batch``."""
    if masks.shape[0] < batch:
        masks = masks.repeat(math.ceil(batch / masks.shape[0]), *([1] * (masks.ndim - 1)))
    return masks[:batch]


class LatentFromBatch(Node):
    """Takes ``length`` latents starting at ``batch_index`` out of a batch (clamped to the
    batch). They keep the noise they would have had in the batch."""

    category = "latent/batch"
    samples = Input("LATENT")
    batch_index = Input("INT", default=0, min=0, max=63)
    length = Input("INT", default=1, min=1, max=64)
    outputs = (Output("LATENT"),)

    def execute(self, samples: dict, batch_index: int, length: int) -> tuple:
        latents = samples["samples"]
        size = latents.shape[0]
        start = min(size - 1, batch_index)
        length = min(size - start, length)
        out = dict(samples, samples=latents[start:start + length].clone())
        masks = samples.get("noise_mask")
        if masks is not None:
            out["noise_mask"] = masks.clone() if masks.shape[0] == 1 else \
                _repeat_masks(masks, size)[start:start + length].clone()
        positions = samples.get("batch_index")
        out["batch_index"] = list(range(start, start + length)) if positions is None else \
            list(positions[start:start + length])
        return (out,)


class RepeatLatentBatch(Node):
    """Repeats the whole batch ``amount`` times (for img2img variations: each copy gets
    its own noise)."""

    category = "latent/batch"
    samples = Input("LATENT")
    amount = Input("INT", default=1, min=1, max=64)
    outputs = (Output("LATENT"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.repeat_latent(inputs)

    def execute(self, samples: dict, amount: int) -> tuple:
        latents = samples["samples"]
        out = dict(samples, samples=latents.repeat(amount, 1, 1, 1))
        masks = samples.get("noise_mask")
        if masks is not None and masks.shape[0] > 1:
            masks = _repeat_masks(masks, latents.shape[0])
            out["noise_mask"] = masks.repeat(amount, *([1] * (masks.ndim - 1)))
        positions = samples.get("batch_index")
        if positions is not None:
            span = max(positions) - min(positions) + 1
            out["batch_index"] = list(positions) + [p + i * span for i in range(1, amount) for p in positions]
        return (out,)
