"""VAE nodes: latents <-> images, whole or in tiles.

IMAGE is ``[B, H, W, 3]`` in 0..1 on the CPU; LATENT ``samples`` are the VAE's unscaled
latents ``[B, 4, H/8, W/8]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from graph import Input, Node, Output
from nodes import memory_estimates


def decode_latents(vae: Any, latents: Any) -> Any:
    """Unscaled latents [B, 4, h, w] -> images [B, 3, 8h, 8w] in -1..1, float32 on the CPU."""
    decoded = vae.vae.decode(latents.to(vae.device, vae.dtype), return_dict=False)[0]
    return decoded.float().cpu()


def encode_images(vae: Any, images: Any) -> Any:
    """Images [B, 3, H, W] in -1..1 (H, W multiples of 8) -> unscaled latents [B, 4, H/8, W/8]
    (the mean of the VAE's latent distribution), float32 on the CPU."""
    posterior = vae.vae.encode(images.to(vae.device, vae.dtype), return_dict=False)[0]
    return posterior.mode().float().cpu()


def vae_placed(context: Any, vae: Any, latent_shape: tuple[int, ...]) -> AbstractContextManager:
    """``with vae_placed(...)``: the VAE on its device, with room for its work on latents of
    ``latent_shape`` [B, C, h, w] (``Runtime.placed``; on the CPU nothing happens)."""
    from nodes.sd.memory import vae_working_bytes
    from nodes.sd.runtime import runtime_of

    return runtime_of(context).placed(vae, working_bytes=vae_working_bytes(latent_shape, vae.dtype))


def latent_shape_of(images: Any) -> tuple[int, int, int, int]:
    """The latent shape [B, 4, H/8, W/8] the VAE encodes images [B, 3, H, W] into."""
    return (images.shape[0], 4, images.shape[2] // 8, images.shape[3] // 8)


def to_image(decoded: Any) -> Any:
    """[B, 3, H, W] in -1..1 -> IMAGE [B, H, W, 3] in 0..1."""
    return ((decoded + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)


def from_image(pixels: Any) -> Any:
    """IMAGE [B, H, W, C] in 0..1, cropped to multiples of 8 pixels -> [B, 3, H', W'] in -1..1."""
    height, width = pixels.shape[1] // 8 * 8, pixels.shape[2] // 8 * 8
    if height == 0 or width == 0:
        raise ValueError(f"the image is {pixels.shape[2]}x{pixels.shape[1]}; the VAE needs at least 8x8 pixels")
    return pixels[:, :height, :width, :3].movedim(-1, 1) * 2.0 - 1.0


class VAEDecode(Node):
    """Decodes latents into images."""

    category = "latent"
    samples = Input("LATENT")
    vae = Input("VAE")
    outputs = (Output("IMAGE"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.vae_decode(inputs)

    def execute(self, samples: dict, vae: Any) -> tuple:
        with vae_placed(self.context, vae, samples["samples"].shape):
            return (to_image(decode_latents(vae, samples["samples"])),)


class VAEEncode(Node):
    """Encodes images into latents (the mean of the VAE's latent distribution).

    Images are cropped to a multiple of 8 pixels first, as the VAE downsamples by 8.
    """

    category = "latent"
    pixels = Input("IMAGE")
    vae = Input("VAE")
    outputs = (Output("LATENT"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.vae_encode(inputs)

    def execute(self, pixels: Any, vae: Any) -> tuple:
        images = from_image(pixels)
        with vae_placed(self.context, vae, latent_shape_of(images)):
            return ({"samples": encode_images(vae, images)},)


def _tile_overlap(tile_size: int, overlap: int) -> int:
    """The overlap to use: at most a quarter of the tile (ComfyUI's rule), a multiple of 8."""
    if tile_size < overlap * 4:
        overlap = tile_size // 4
    return overlap // 8 * 8


class VAEDecodeTiled(Node):
    """Decodes latents tile by tile (``tile_size`` pixels, neighbours sharing ``overlap``),
    blending the overlaps so no seams show; needs far less memory for large images.

    ``temporal_size`` and ``temporal_overlap`` apply to video VAEs only and are ignored here.
    """

    category = "_for_testing"
    samples = Input("LATENT")
    vae = Input("VAE")
    tile_size = Input("INT", default=512, min=64, max=4096, step=32)
    overlap = Input("INT", default=64, min=0, max=4096, step=32)
    temporal_size = Input("INT", default=64, min=8, max=4096, step=4,
                          tooltip="only used for video VAEs: frames to decode at a time")
    temporal_overlap = Input("INT", default=8, min=4, max=4096, step=4,
                             tooltip="only used for video VAEs: frames to overlap")
    outputs = (Output("IMAGE"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.vae_decode(inputs, tiled=True)

    def execute(self, samples: dict, vae: Any, tile_size: int, overlap: int, temporal_size: int = 64,
                temporal_overlap: int = 8) -> tuple:
        from nodes.sd.tiling import tiled_map

        overlap = _tile_overlap(tile_size, overlap)
        latents = samples["samples"]
        tile = max(1, tile_size // 8)
        with vae_placed(self.context, vae, latents[:, :, :tile, :tile].shape):  # room for one tile
            decoded = tiled_map(lambda z: decode_latents(vae, z), latents.float(), tile, overlap // 8, scale=8)
        return (to_image(decoded),)


class VAEEncodeTiled(Node):
    """Encodes images tile by tile (``tile_size`` pixels, neighbours sharing ``overlap``),
    blending the overlapping latents; needs far less memory for large images.

    ``temporal_size`` and ``temporal_overlap`` apply to video VAEs only and are ignored here.
    """

    category = "_for_testing"
    pixels = Input("IMAGE")
    vae = Input("VAE")
    tile_size = Input("INT", default=512, min=64, max=4096, step=64)
    overlap = Input("INT", default=64, min=0, max=4096, step=32)
    temporal_size = Input("INT", default=64, min=8, max=4096, step=4,
                          tooltip="only used for video VAEs: frames to encode at a time")
    temporal_overlap = Input("INT", default=8, min=4, max=4096, step=4,
                             tooltip="only used for video VAEs: frames to overlap")
    outputs = (Output("LATENT"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.vae_encode(inputs, tiled=True)

    def execute(self, pixels: Any, vae: Any, tile_size: int, overlap: int, temporal_size: int = 64,
                temporal_overlap: int = 8) -> tuple:
        from nodes.sd.tiling import tiled_map

        overlap = _tile_overlap(tile_size, overlap)
        images, tile = from_image(pixels), tile_size // 8 * 8
        with vae_placed(self.context, vae, latent_shape_of(images[:, :, :tile, :tile])):  # room for one tile
            latents = tiled_map(lambda p: encode_images(vae, p), images, tile, overlap, scale=1 / 8, align=8)
        return ({"samples": latents},)
