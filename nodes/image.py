"""Image nodes: make and transform ``IMAGE`` values.

An ``IMAGE`` is a float tensor ``[B, H, W, C]`` with values in 0..1, on the CPU
(ComfyUI's convention). torch and Pillow are imported inside ``execute`` so that
declaring these nodes costs nothing at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph import Input, Node, Output
from nodes import memory_estimates

MAX_RESOLUTION = 16384
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]


class EmptyImage(Node):
    """Creates a batch of images filled with one colour."""

    category = "image"
    width = Input("INT", default=512, min=1, max=MAX_RESOLUTION, step=1)
    height = Input("INT", default=512, min=1, max=MAX_RESOLUTION, step=1)
    batch_size = Input("INT", default=1, min=1, max=4096)
    color = Input("INT", default=0, min=0, max=0xFFFFFF, step=1, tooltip="colour as 0xRRGGBB")
    outputs = (Output("IMAGE"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.empty_image(inputs)

    def execute(self, width: int, height: int, batch_size: int, color: int) -> tuple:
        import torch

        rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 255.0
        return (rgb.expand(batch_size, height, width, 3).clone(),)


class ImageInvert(Node):
    """Inverts every channel: ``1 - image``."""

    category = "image"
    image = Input("IMAGE")
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any) -> tuple:
        return (1.0 - image,)


class ImageScale(Node):
    """Resizes images to a width and height, optionally centre-cropping to keep the aspect."""

    category = "image/upscaling"
    image = Input("IMAGE")
    upscale_method = Input(choices=UPSCALE_METHODS, default="nearest-exact")
    width = Input("INT", default=512, min=0, max=MAX_RESOLUTION, step=1, tooltip="0 keeps the aspect ratio")
    height = Input("INT", default=512, min=0, max=MAX_RESOLUTION, step=1, tooltip="0 keeps the aspect ratio")
    crop = Input(choices=["disabled", "center"], default="disabled")
    outputs = (Output("IMAGE"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.image_resize(inputs)

    def execute(self, image: Any, upscale_method: str, width: int, height: int, crop: str) -> tuple:
        _, old_h, old_w, _ = image.shape
        if width == 0 and height == 0:
            return (image,)
        if width == 0:
            width = max(1, round(old_w * height / old_h))
        elif height == 0:
            height = max(1, round(old_h * width / old_w))
        if crop == "center":
            image = center_crop(image, width / height)
        return (resize_images(image, width, height, upscale_method),)


class ImageScaleBy(Node):
    """Resizes images by a factor."""

    category = "image/upscaling"
    image = Input("IMAGE")
    upscale_method = Input(choices=UPSCALE_METHODS, default="nearest-exact")
    scale_by = Input("FLOAT", default=1.0, min=0.01, max=8.0, step=0.01)
    outputs = (Output("IMAGE"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.image_resize(inputs)

    def execute(self, image: Any, upscale_method: str, scale_by: float) -> tuple:
        return (scale_images(image, scale_by, upscale_method),)


class ImageScaleToTotalPixels(Node):
    """Resizes images to about ``megapixels`` million pixels, keeping the aspect ratio."""

    category = "image/upscaling"
    image = Input("IMAGE")
    upscale_method = Input(choices=UPSCALE_METHODS, default="nearest-exact")
    megapixels = Input("FLOAT", default=1.0, min=0.01, max=16.0, step=0.01)
    outputs = (Output("IMAGE"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.image_resize(inputs)

    def execute(self, image: Any, upscale_method: str, megapixels: float) -> tuple:
        _, height, width, _ = image.shape
        total = int(megapixels * 1024 * 1024)  # ComfyUI counts 1024 * 1024 pixels per megapixel
        return (scale_images(image, (total / (width * height)) ** 0.5, upscale_method),)


def scale_images(image: Any, scale: float, method: str) -> Any:
    """Images [B, H, W, C] resized by ``scale`` (each side rounded, at least 1 pixel)."""
    _, height, width, _ = image.shape
    return resize_images(image, max(1, round(width * scale)), max(1, round(height * scale)), method)


class ImageBatch(Node):
    """Joins two image batches into one; ``image2`` is first resized (bilinear,
    centre-cropped to the aspect) to ``image1``'s size when they differ."""

    category = "image"
    image1 = Input("IMAGE")
    image2 = Input("IMAGE")
    outputs = (Output("IMAGE"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.image_batch(inputs)

    def execute(self, image1: Any, image2: Any) -> tuple:
        import torch

        _, height, width, channels = image1.shape
        if image2.shape[-1] != channels:
            raise ValueError(f"cannot batch {channels}-channel and {image2.shape[-1]}-channel images")
        if image2.shape[1:3] != image1.shape[1:3]:
            image2 = resize_images(center_crop(image2, width / height), width, height, "bilinear")
        return (torch.cat([image1, image2.to(image1.dtype)]),)


class ImageCrop(Node):
    """Crops images to ``width`` x ``height`` from ``x``, ``y`` (pixels), clipped to the image."""

    category = "image/transform"
    image = Input("IMAGE")
    width = Input("INT", default=512, min=1, max=MAX_RESOLUTION, step=1)
    height = Input("INT", default=512, min=1, max=MAX_RESOLUTION, step=1)
    x = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=1)
    y = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=1)
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, width: int, height: int, x: int, y: int) -> tuple:
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :].clone(),)


def resize_images(image: Any, width: int, height: int, method: str) -> Any:
    """Resizes a ``[B, H, W, C]`` image batch to ``width`` x ``height`` pixels."""
    import torch
    import torch.nn.functional as F

    if method == "lanczos":  # not in torch: go through Pillow frame by frame
        import numpy as np
        from PIL import Image

        frames = []
        for frame in image:
            pil = Image.fromarray(to_uint8(frame)).resize((width, height), Image.Resampling.LANCZOS)
            frames.append(torch.from_numpy(np.asarray(pil).copy()).float() / 255.0)
        return torch.stack(frames)
    kwargs = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    resized = F.interpolate(image.movedim(-1, 1), size=(height, width), mode=method, **kwargs)
    return resized.movedim(1, -1).clamp(0.0, 1.0)


def center_crop(tensor: Any, aspect: float, height_dim: int = 1) -> Any:
    """Crops around the centre to a width/height ratio; height and width are the axes
    ``height_dim`` and the one after it (1 for ``[B, H, W, C]`` images, -2 for latents)."""
    h_axis = height_dim % tensor.ndim
    height, width = tensor.shape[h_axis], tensor.shape[h_axis + 1]
    if width / height > aspect:
        new_w = round(height * aspect)
        return tensor.narrow(h_axis + 1, (width - new_w) // 2, new_w)
    new_h = round(width / aspect)
    return tensor.narrow(h_axis, (height - new_h) // 2, new_h)


def to_uint8(frame: Any) -> Any:
    """One ``[H, W, C]`` float image in 0..1 -> a uint8 numpy array."""
    import torch

    return (frame.clamp(0.0, 1.0) * 255.0).round().to(dtype=torch.uint8).cpu().numpy()
