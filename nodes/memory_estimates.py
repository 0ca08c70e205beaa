"""Memory estimates of the nodes that allocate by their inputs (see ``graph.estimate``).

Each function takes a node's estimate inputs (constants, or upstream ``TensorSize``) and
returns a ``MemoryEstimate``; the node classes call them from their ``estimate``
classmethod. Sizes are float32, as the nodes keep IMAGE, MASK and LATENT on the CPU.
Working-memory figures are the same heuristics the device manager uses
(``nodes.sd.memory``), written here without torch so validation never imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph.estimate import MemoryEstimate, TensorSize, float_input, int_input

LATENT_CHANNELS = 4
VAE_FACTOR = 8
# Activation elements per latent element in a UNet call (both halves of classifier-free
# guidance), and per pixel in a VAE pass (a few full-resolution 128-256 channel maps): the
# heuristics the device manager also uses (nodes/sd/memory.py), here at float32.
UNET_ACTIVATIONS_PER_LATENT_ELEMENT = 2 * 4096
VAE_ACTIVATIONS_PER_PIXEL = 256 * 2
UNET_BYTES_PER_LATENT_ELEMENT = UNET_ACTIVATIONS_PER_LATENT_ELEMENT * 4
# kornia's Canny (blur, gradients, angles, non-maximum suppression over eight directions,
# hysteresis) peaks at about 64 float32 maps of the image's size (measured with kornia 0.9 at
# 1024 and 2048 px squared).
CANNY_FLOATS_PER_PIXEL = 64
VAE_BYTES_PER_PIXEL = VAE_ACTIVATIONS_PER_PIXEL * 4


def _largest(inputs: Mapping[str, Any], defaults: Mapping[str, float]) -> str:
    """The size input furthest above its usual value: the one an error should point at."""
    return max(defaults, key=lambda name: int_input(inputs, name, 1) / defaults[name])


def _keep_aspect(new_w: int, new_h: int, width: int, height: int) -> tuple[int, int]:
    """ComfyUI's resize sizes: a 0 side follows the other's scale; both 0 keep the size."""
    if new_w == 0 and new_h == 0:
        return width, height
    if new_w == 0:
        return max(1, round(width * new_h / max(height, 1))), new_h
    if new_h == 0:
        return new_w, max(1, round(height * new_w / max(width, 1)))
    return new_w, new_h


def _shape(value: Any, rank: int) -> tuple[int, ...] | None:
    if isinstance(value, TensorSize) and len(value.shape) == rank:
        return value.shape
    return None


def empty_latent(inputs: Mapping[str, Any]) -> MemoryEstimate:
    """EmptyLatentImage: [batch, 4, height/8, width/8]."""
    width, height = int_input(inputs, "width", 512), int_input(inputs, "height", 512)
    batch = int_input(inputs, "batch_size", 1)
    size = TensorSize((batch, LATENT_CHANNELS, height // VAE_FACTOR, width // VAE_FACTOR))
    return MemoryEstimate((size,), cause=_largest(inputs, {"width": 512, "height": 512, "batch_size": 1}))


def empty_image(inputs: Mapping[str, Any]) -> MemoryEstimate:
    """EmptyImage: [batch, height, width, 3]."""
    width, height = int_input(inputs, "width", 512), int_input(inputs, "height", 512)
    batch = int_input(inputs, "batch_size", 1)
    return MemoryEstimate((TensorSize((batch, height, width, 3)),),
                          cause=_largest(inputs, {"width": 512, "height": 512, "batch_size": 1}))


def solid_mask(inputs: Mapping[str, Any]) -> MemoryEstimate:
    """SolidMask: [1, height, width]."""
    width, height = int_input(inputs, "width", 512), int_input(inputs, "height", 512)
    return MemoryEstimate((TensorSize((1, height, width)),), cause=_largest(inputs, {"width": 512, "height": 512}))


def same_latent(inputs: Mapping[str, Any], name: str = "samples") -> MemoryEstimate | None:
    """Nodes whose LATENT output has the shape of their input (noise masks)."""
    shape = _shape(inputs.get(name), 4)
    return MemoryEstimate((TensorSize(shape),)) if shape else None


def sampler(inputs: Mapping[str, Any]) -> MemoryEstimate | None:
    """KSampler and friends: a latent like ``latent_image``, plus the UNet's activations."""
    shape = _shape(inputs.get("latent_image"), 4)
    if shape is None:
        return None
    size = TensorSize(shape)
    return MemoryEstimate((size,), working_bytes=size.nbytes // size.itemsize * UNET_BYTES_PER_LATENT_ELEMENT,
                          cause="latent_image")


def latent_resize(inputs: Mapping[str, Any]) -> MemoryEstimate | None:
    """LatentUpscale (width/height in pixels; 0 keeps the aspect) and LatentUpscaleBy."""
    shape = _shape(inputs.get("samples"), 4)
    if shape is None:
        return None
    batch, channels, height, width = shape
    if "scale_by" in inputs:
        scale = float_input(inputs, "scale_by", 1.0)
        return MemoryEstimate((TensorSize((batch, channels, round(height * scale), round(width * scale))),),
                              cause="scale_by")
    new_w, new_h = int_input(inputs, "width"), int_input(inputs, "height")
    if new_w == 0 and new_h == 0:
        new_w, new_h = width * VAE_FACTOR, height * VAE_FACTOR
    elif new_w == 0:  # as the node: the given side at least 64 pixels, the other in the latent's aspect
        new_h = max(64, new_h)
        new_w = max(64, round(width * new_h / max(height, 1)))
    elif new_h == 0:
        new_w = max(64, new_w)
        new_h = max(64, round(height * new_w / max(width, 1)))
    return MemoryEstimate((TensorSize((batch, channels, new_h // VAE_FACTOR, new_w // VAE_FACTOR)),),
                          cause=_largest(inputs, {"width": 512, "height": 512}))


def repeat_latent(inputs: Mapping[str, Any]) -> MemoryEstimate | None:
    """RepeatLatentBatch: the batch times ``amount``."""
    shape = _shape(inputs.get("samples"), 4)
    if shape is None:
        return None
    amount = int_input(inputs, "amount", 1)
    return MemoryEstimate((TensorSize((shape[0] * amount, *shape[1:])),), cause="amount")


def image_resize(inputs: Mapping[str, Any]) -> MemoryEstimate | None:
    """ImageScale (0 keeps the aspect), ImageScaleBy and ImageScaleToTotalPixels."""
    shape = _shape(inputs.get("image"), 4)
    if shape is None:
        return None
    batch, height, width, channels = shape
    if "scale_by" in inputs:
        scale, cause = float_input(inputs, "scale_by", 1.0), "scale_by"
        new_h, new_w = round(height * scale), round(width * scale)
    elif "megapixels" in inputs:
        scale = (float_input(inputs, "megapixels", 1.0) * 1024 * 1024 / max(height * width, 1)) ** 0.5
        new_h, new_w, cause = round(height * scale), round(width * scale), "megapixels"
    else:
        new_w, new_h = _keep_aspect(int_input(inputs, "width"), int_input(inputs, "height"), width, height)
        cause = _largest(inputs, {"width": 512, "height": 512})
    return MemoryEstimate((TensorSize((batch, new_h, new_w, channels)),), cause=cause)


def canny(inputs: Mapping[str, Any]) -> MemoryEstimate | None:
    """Canny: a 3-channel image of the input's size, plus kornia's working maps."""
    shape = _shape(inputs.get("image"), 4)
    if shape is None:
        return None
    batch, height, width, _ = shape
    return MemoryEstimate((TensorSize((batch, height, width, 3)),),
                          working_bytes=batch * height * width * CANNY_FLOATS_PER_PIXEL * 4, cause="image")


def image_batch(inputs: Mapping[str, Any]) -> MemoryEstimate | None:
    """ImageBatch: both batches at the first image's size."""
    first, second = _shape(inputs.get("image1"), 4), _shape(inputs.get("image2"), 4)
    if first is None or second is None:
        return None
    return MemoryEstimate((TensorSize((first[0] + second[0], *first[1:])),), cause="image2")


def pad_for_outpaint(inputs: Mapping[str, Any]) -> MemoryEstimate | None:
    """ImagePadForOutpaint: the image grown by its four margins, and a mask of that size."""
    shape = _shape(inputs.get("image"), 4)
    if shape is None:
        return None
    batch, height, width, channels = shape
    new_h = height + int_input(inputs, "top") + int_input(inputs, "bottom")
    new_w = width + int_input(inputs, "left") + int_input(inputs, "right")
    cause = max(("left", "top", "right", "bottom"), key=lambda name: int_input(inputs, name))
    return MemoryEstimate((TensorSize((batch, new_h, new_w, channels)), TensorSize((new_h, new_w))), cause=cause)


def _vae_working_bytes(inputs: Mapping[str, Any], batch: int, pixels: int, tiled: bool) -> int:
    """The VAE's activations for ``pixels`` per image: the whole batch at once, or one tile."""
    if tiled:
        tile = int_input(inputs, "tile_size", 512)
        return min(pixels, tile * tile) * VAE_BYTES_PER_PIXEL
    return batch * pixels * VAE_BYTES_PER_PIXEL


def vae_decode(inputs: Mapping[str, Any], *, tiled: bool = False) -> MemoryEstimate | None:
    """VAEDecode: [B, 4, h, w] -> IMAGE [B, 8h, 8w, 3], with full-resolution activations
    (one tile's worth when tiled)."""
    shape = _shape(inputs.get("samples"), 4)
    if shape is None:
        return None
    batch, _channels, height, width = shape
    working = _vae_working_bytes(inputs, batch, height * VAE_FACTOR * width * VAE_FACTOR, tiled)
    return MemoryEstimate((TensorSize((batch, height * VAE_FACTOR, width * VAE_FACTOR, 3)),),
                          working_bytes=working, cause="samples")


def vae_encode(inputs: Mapping[str, Any], *, tiled: bool = False) -> MemoryEstimate | None:
    """VAEEncode: IMAGE [B, H, W, 3] -> [B, 4, H/8, W/8], with full-resolution activations."""
    shape = _shape(inputs.get("pixels"), 4)
    if shape is None:
        return None
    batch, height, width, _channels = shape
    working = _vae_working_bytes(inputs, batch, height * width, tiled)
    latent = TensorSize((batch, LATENT_CHANNELS, height // VAE_FACTOR, width // VAE_FACTOR))
    return MemoryEstimate((latent,), working_bytes=working, cause="pixels")
