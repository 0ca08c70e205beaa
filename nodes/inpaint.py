"""Inpainting and outpainting nodes.

MASK values are 1 where the image is to be regenerated. ComfyUI's sampler never pastes
pixels back: a masked latent keeps its unmasked latent pixels exactly, but decoding mixes
neighbouring latents, so pixels near the mask change slightly. ImageCompositeMasked puts
the generated pixels into the original image through the mask, leaving every other pixel
exactly as it was (the example workflows end with it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from graph import Input, Node, Output
from nodes import memory_estimates
from nodes.image import MAX_RESOLUTION
from nodes.masks import mask_4d


def _centre_crop_to_8(pixels: Any, mask: Any) -> tuple[Any, Any]:
    """IMAGE [B, H, W, C] and MASK -> the image's RGB and the mask (resized to the image,
    ``[B, 1, H', W']``), both centre-cropped to multiples of 8 pixels as the VAE needs."""
    import torch.nn.functional as F

    _, height, width, _ = pixels.shape
    mask = F.interpolate(mask_4d(mask), size=(height, width), mode="bilinear", align_corners=False)
    crop_h, crop_w = height // 8 * 8, width // 8 * 8
    if crop_h == 0 or crop_w == 0:
        raise ValueError(f"the image is {width}x{height}; the VAE needs at least 8x8 pixels")
    top, left = (height % 8) // 2, (width % 8) // 2
    return pixels[:, top:top + crop_h, left:left + crop_w, :3], mask[:, :, top:top + crop_h, left:left + crop_w]


def grow_mask(mask: Any, pixels: int) -> Any:
    """Dilates a binary mask [B, 1, H, W] by a ``pixels`` x ``pixels`` square (output
    pixel i covers input pixels i - ceil((pixels-1)/2) .. i + pixels - 1 - ceil((pixels-1)/2))."""
    import torch.nn.functional as F

    if pixels <= 0:
        return mask
    pad = math.ceil((pixels - 1) / 2)
    grown = F.max_pool2d(mask, kernel_size=pixels, stride=1, padding=pad)
    return grown[:, :, :mask.shape[-2], :mask.shape[-1]]


class SetLatentNoiseMask(Node):
    """Attaches a mask to a latent so the sampler regenerates only where the mask is 1;
    elsewhere the latent is kept exactly."""

    category = "latent/inpaint"
    samples = Input("LATENT")
    mask = Input("MASK")
    outputs = (Output("LATENT"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.same_latent(inputs)

    def execute(self, samples: dict, mask: Any) -> tuple:
        return (dict(samples, noise_mask=mask_4d(mask)),)


class VAEEncodeForInpaint(Node):
    """Encodes an image for inpainting: pixels under the mask become mid-grey before
    encoding, and the mask, grown by ``grow_mask_by`` pixels to blend the seam, becomes
    the latent's noise mask. Images are centre-cropped to multiples of 8 pixels.

    Use with denoise 1.0 (the masked area holds no image to keep); the mask and the
    greyed latent are also what a 9-channel inpainting model is fed.
    """

    category = "latent/inpaint"
    pixels = Input("IMAGE")
    vae = Input("VAE")
    mask = Input("MASK")
    grow_mask_by = Input("INT", default=6, min=0, max=64, step=1)
    outputs = (Output("LATENT"),)

    def execute(self, pixels: Any, vae: Any, mask: Any, grow_mask_by: int) -> tuple:
        from nodes.sampling.regions import fit_batch
        from nodes.vae import encode_images, latent_shape_of, vae_placed

        pixels, mask = _centre_crop_to_8(pixels, mask)
        binary = mask.round()
        if binary.shape[0] != pixels.shape[0]:
            binary = fit_batch(binary, pixels.shape[0])
        keep = (1.0 - binary).movedim(1, -1)  # [B, H, W, 1]
        greyed = ((pixels - 0.5) * keep + 0.5).movedim(-1, 1) * 2.0 - 1.0
        with vae_placed(self.context, vae, latent_shape_of(greyed)):
            latents = encode_images(vae, greyed)
        return ({"samples": latents, "noise_mask": grow_mask(binary, grow_mask_by).round()},)


class ImagePadForOutpaint(Node):
    """Pads images with mid-grey on each side (pixels) and returns the mask of the new area.

    Inside the original image the mask fades from the padded edges over ``feathering``
    pixels (quadratically), so the generated border blends in; the fade is skipped when
    the image is not more than twice ``feathering`` in both directions.
    """

    category = "image"
    image = Input("IMAGE")
    left = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=8)
    top = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=8)
    right = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=8)
    bottom = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=8)
    feathering = Input("INT", default=40, min=0, max=MAX_RESOLUTION, step=1)
    outputs = (Output("IMAGE"), Output("MASK"))

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.pad_for_outpaint(inputs)

    def execute(self, image: Any, left: int, top: int, right: int, bottom: int, feathering: int) -> tuple:
        import torch

        batch, height, width, channels = image.shape
        padded = torch.full((batch, height + top + bottom, width + left + right, channels), 0.5)
        padded[:, top:top + height, left:left + width, :] = image
        mask = torch.ones((height + top + bottom, width + left + right))
        inner = torch.zeros((height, width))
        if feathering > 0 and feathering * 2 < height and feathering * 2 < width:
            rows = torch.arange(height, dtype=torch.float32)
            cols = torch.arange(width, dtype=torch.float32)
            # distance to each padded side (a side without padding never fades)
            d_top = rows if top else torch.full_like(rows, height)
            d_bottom = height - rows if bottom else torch.full_like(rows, height)
            d_left = cols if left else torch.full_like(cols, width)
            d_right = width - cols if right else torch.full_like(cols, width)
            distance = torch.minimum(torch.minimum(d_top, d_bottom)[:, None], torch.minimum(d_left, d_right)[None, :])
            fade = ((feathering - distance) / feathering).clamp(min=0.0)
            inner = torch.where(distance < feathering, fade * fade, inner)
        mask[top:top + height, left:left + width] = inner
        return (padded, mask.unsqueeze(0))


class ImageCompositeMasked(Node):
    """Pastes ``source`` onto ``destination`` at ``x``, ``y`` (pixels) through ``mask``
    (1 = source; resized to the source; none = paste all). ``resize_source`` first scales
    the source to the destination's size. Pixels outside the mask keep the destination's."""

    category = "image"
    destination = Input("IMAGE")
    source = Input("IMAGE")
    x = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=1)
    y = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=1)
    resize_source = Input("BOOLEAN", default=False)
    mask = Input("MASK", optional=True)
    outputs = (Output("IMAGE"),)

    def execute(self, destination: Any, source: Any, x: int, y: int, resize_source: bool, mask: Any = None) -> tuple:
        import torch.nn.functional as F

        from nodes.sampling.regions import fit_batch

        out = destination.clone()
        batch, dest_h, dest_w, channels = out.shape
        if source.shape[-1] < channels:
            raise ValueError(f"source has {source.shape[-1]} channels, destination {channels}")
        src = source[..., :channels].movedim(-1, 1)
        if resize_source:
            src = F.interpolate(src, size=(dest_h, dest_w), mode="bilinear", align_corners=False)
        src = fit_batch(src, batch)
        src_h, src_w = src.shape[-2:]
        if mask is None:
            weight = src.new_ones((batch, 1, src_h, src_w))
        else:
            weight = F.interpolate(mask_4d(mask), size=(src_h, src_w), mode="bilinear", align_corners=False)
            weight = fit_batch(weight, batch)
        visible_h, visible_w = max(0, min(src_h, dest_h - y)), max(0, min(src_w, dest_w - x))
        if visible_h == 0 or visible_w == 0:
            return (out,)
        region = out[:, y:y + visible_h, x:x + visible_w, :].movedim(-1, 1)
        w = weight[:, :, :visible_h, :visible_w]
        blended = src[:, :, :visible_h, :visible_w] * w + region * (1.0 - w)
        out[:, y:y + visible_h, x:x + visible_w, :] = blended.movedim(1, -1)
        return (out,)


class InpaintModelConditioning(Node):
    """Prepares an inpainting model's inputs: the conditionings carry the greyed-out image's
    latent and the mask (``concat_latent_image``, ``concat_mask``), and the latent is the
    original image's, with the mask as noise mask when ``noise_mask`` is on.

    Unlike VAEEncodeForInpaint, this keeps the original pixels under the mask in the
    sampled latent, so denoise below 1.0 works.
    """

    category = "conditioning/inpaint"
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    vae = Input("VAE")
    pixels = Input("IMAGE")
    mask = Input("MASK")
    noise_mask = Input("BOOLEAN", default=True,
                       tooltip="sample only inside the mask (improves results on most inpainting models)")
    outputs = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def execute(self, positive: list, negative: list, vae: Any, pixels: Any, mask: Any, noise_mask: bool) -> tuple:
        from nodes.sampling.regions import fit_batch
        from nodes.vae import encode_images, from_image, latent_shape_of, vae_placed

        pixels, mask = _centre_crop_to_8(pixels, mask)
        keep = fit_batch(1.0 - mask.round(), pixels.shape[0]).movedim(1, -1)
        with vae_placed(self.context, vae, latent_shape_of(from_image(pixels))):
            greyed = encode_images(vae, from_image((pixels - 0.5) * keep + 0.5))
            original = encode_images(vae, from_image(pixels))
        latent = {"samples": original, "noise_mask": mask} if noise_mask else {"samples": original}
        extras = {"concat_latent_image": greyed, "concat_mask": mask}
        return ([[c, {**e, **extras}] for c, e in positive], [[c, {**e, **extras}] for c, e in negative], latent)
