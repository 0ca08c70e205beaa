"""Latent nodes: create and resize ``LATENT`` values.

A ``LATENT`` is a dict with ``samples``: a float tensor ``[B, 4, H/8, W/8]`` in the VAE's
unscaled latent space, plus optional ``noise_mask`` and ``batch_index``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph import Input, Node, Output
from nodes import memory_estimates
from nodes.image import MAX_RESOLUTION, center_crop

LATENT_UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]


class EmptyLatentImage(Node):
    """A batch of all-zero latents for txt2img; width and height are in pixels."""

    category = "latent"
    width = Input("INT", default=512, min=16, max=MAX_RESOLUTION, step=8)
    height = Input("INT", default=512, min=16, max=MAX_RESOLUTION, step=8)
    batch_size = Input("INT", default=1, min=1, max=4096)
    outputs = (Output("LATENT"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.empty_latent(inputs)

    def execute(self, width: int, height: int, batch_size: int) -> tuple:
        import torch

        return ({"samples": torch.zeros([batch_size, 4, height // 8, width // 8])},)


class LatentUpscale(Node):
    """Resizes latents to a pixel width and height (0 keeps the aspect ratio)."""

    category = "latent"
    samples = Input("LATENT")
    upscale_method = Input(choices=LATENT_UPSCALE_METHODS, default="nearest-exact")
    width = Input("INT", default=512, min=0, max=MAX_RESOLUTION, step=8)
    height = Input("INT", default=512, min=0, max=MAX_RESOLUTION, step=8)
    crop = Input(choices=["disabled", "center"], default="disabled")
    outputs = (Output("LATENT"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.latent_resize(inputs)

    def execute(self, samples: dict, upscale_method: str, width: int, height: int, crop: str) -> tuple:
        latent = samples["samples"]
        old_h, old_w = latent.shape[-2:]
        if width == 0 and height == 0:
            return (samples,)
        # ComfyUI's rule: the given side at least 64 pixels, the other in the latent's aspect ratio.
        if width == 0:
            height = max(64, height)
            width = max(64, round(old_w * height / old_h))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(old_h * width / old_w))
        if crop == "center":
            latent = center_crop(latent, width / height, height_dim=-2)
        return (dict(samples, samples=resize_latent(latent, width // 8, height // 8, upscale_method)),)


class LatentUpscaleBy(Node):
    """Resizes latents by a factor."""

    category = "latent"
    samples = Input("LATENT")
    upscale_method = Input(choices=LATENT_UPSCALE_METHODS, default="nearest-exact")
    scale_by = Input("FLOAT", default=1.5, min=0.01, max=8.0, step=0.01)
    outputs = (Output("LATENT"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.latent_resize(inputs)

    def execute(self, samples: dict, upscale_method: str, scale_by: float) -> tuple:
        latent = samples["samples"]
        new_w, new_h = round(latent.shape[-1] * scale_by), round(latent.shape[-2] * scale_by)
        return (dict(samples, samples=resize_latent(latent, max(1, new_w), max(1, new_h), upscale_method)),)


def resize_latent(latent: Any, width: int, height: int, method: str) -> Any:
    """Resizes ``[B, C, h, w]`` latents to ``[B, C, height, width]`` (latent pixels)."""
    import torch.nn.functional as F

    if method == "bislerp":
        return bislerp(latent, width, height)
    kwargs = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    return F.interpolate(latent, size=(height, width), mode=method, **kwargs)


def bislerp(latent: Any, width: int, height: int) -> Any:
    """Bilinear resampling with spherical interpolation of channel vectors.

    Each output latent pixel blends its neighbours by slerp over the channel vector, so
    magnitudes are kept rather than averaged down, which suits noisy latents.
    """
    import torch

    def slerp(a: Any, b: Any, t: Any) -> Any:
        # a, b: [N, C]; t: [N, 1]. Falls back to lerp where vectors are (anti)parallel.
        norm_a, norm_b = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
        unit_a, unit_b = a / norm_a.clamp_min(1e-8), b / norm_b.clamp_min(1e-8)
        dot = (unit_a * unit_b).sum(1, keepdim=True).clamp(-1.0, 1.0)
        omega = torch.acos(dot)
        sin_omega = torch.sin(omega)
        direction = (torch.sin((1 - t) * omega) * unit_a + torch.sin(t * omega) * unit_b) / sin_omega.clamp_min(1e-8)
        direction = torch.where(sin_omega < 1e-4, unit_a * (1 - t) + unit_b * t, direction)
        return direction * (norm_a * (1 - t) + norm_b * t)

    def resample(x: Any, size: int, dim: int) -> Any:
        # Moves along one spatial axis (dim 2 or 3) of [B, C, H, W].
        old = x.shape[dim]
        coords = (torch.arange(size, dtype=torch.float32) + 0.5) * old / size - 0.5
        coords = coords.clamp(0, old - 1)
        low = coords.floor().long()
        high = (low + 1).clamp(max=old - 1)
        t = (coords - low.float())
        moved = x.movedim(dim, -1)  # [..., old]
        a = moved[..., low].movedim(1, -1)  # [B, ..., size, C]
        b = moved[..., high].movedim(1, -1)
        shape = a.shape
        weights = t.view(*([1] * (len(shape) - 2)), size, 1).expand(*shape[:-1], 1)
        out = slerp(a.reshape(-1, shape[-1]), b.reshape(-1, shape[-1]), weights.reshape(-1, 1))
        return out.reshape(shape).movedim(-1, 1).movedim(-1, dim)

    return resample(resample(latent.float(), height, 2), width, 3).to(latent.dtype)
