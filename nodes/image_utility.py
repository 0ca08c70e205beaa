"""Image utility nodes from ComfyUI's current core: size, batching, picking and stitching.

IMAGE values are ``[B, H, W, C]`` floats in 0..1 (see ``nodes.image``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph import Input, Node, Output
from nodes.image import MAX_RESOLUTION, center_crop, resize_images

BATCH_INPUTS = 50  # ComfyUI's Autogrow template for BatchImagesNode: image0 .. image49, two required


class GetImageSize(Node):
    """The width, height and batch size of an image batch."""

    display_name = "Get Image Size"
    category = "image"
    image = Input("IMAGE")
    outputs = (Output("INT", "width"), Output("INT", "height"), Output("INT", "batch_size"))

    def execute(self, image: Any) -> tuple:
        batch, height, width = image.shape[:3]
        return (int(width), int(height), int(batch))


class ImageFromBatch(Node):
    """``length`` images of a batch from ``batch_index`` (negative counts from the end);
    both are clamped to the batch."""

    display_name = "Get Image from Batch"
    category = "image/batch"
    image = Input("IMAGE")
    batch_index = Input("INT", default=0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION)
    length = Input("INT", default=1, min=1, max=4096)
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, batch_index: int, length: int) -> tuple:
        size = image.shape[0]
        if batch_index < 0:
            batch_index += size
        batch_index = max(0, min(size - 1, batch_index))
        length = min(size - batch_index, length)
        return (image[batch_index:batch_index + length].clone(),)


def _declare_batch_inputs(cls: type[Node]) -> type[Node]:
    """Adds ``images.image0`` .. ``images.image49`` (names with a dot, so not in the class
    body): the first two required, as ComfyUI's Autogrow template with min=2."""
    for index in range(BATCH_INPUTS):
        setattr(cls, f"images.image{index}", Input("IMAGE", optional=index >= 2))
    return cls


@_declare_batch_inputs
class BatchImagesNode(Node):
    """Joins images into one batch, in input order. Every image is brought to the first
    one's size (bilinear, centre-cropped to its aspect) and to the most channels among
    them (a missing alpha channel is opaque)."""

    display_name = "Batch Images"
    category = "image"
    outputs = (Output("IMAGE"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        """Every batch at the first image's size (``graph.estimate``)."""
        from graph.estimate import MemoryEstimate, TensorSize

        shapes = [inputs[name].shape for name in (f"images.image{i}" for i in range(BATCH_INPUTS))
                  if isinstance(inputs.get(name), TensorSize) and len(inputs[name].shape) == 4]
        if not shapes:
            return None
        size = (sum(shape[0] for shape in shapes), *shapes[0][1:3], max(shape[3] for shape in shapes))
        return MemoryEstimate((TensorSize(size),), cause="images.image1")

    def execute(self, **images: Any) -> tuple:
        ordered = [images[name] for name in (f"images.image{i}" for i in range(BATCH_INPUTS))
                   if images.get(name) is not None]
        return (batch_images(ordered),)


def batch_images(images: list[Any]) -> Any:
    """One batch from several ``[B, H, W, C]`` images, as ComfyUI's Batch Images does."""
    import torch

    if not images:
        raise ValueError("no images to batch")
    channels = max(image.shape[-1] for image in images)
    _, height, width, _ = images[0].shape
    out = []
    for image in images:
        image = _pad_channels(image, channels)
        if image.shape[1:3] != (height, width):
            image = resize_images(center_crop(image, width / height), width, height, "bilinear")
        out.append(image.to(images[0].dtype))
    return torch.cat(out)


def _pad_channels(image: Any, channels: int) -> Any:
    """Adds channels of ones (an opaque alpha) up to ``channels``."""
    import torch

    missing = channels - image.shape[-1]
    if missing <= 0:
        return image
    return torch.cat([image, torch.ones(*image.shape[:-1], missing, dtype=image.dtype)], dim=-1)


SPACING_COLORS: dict[str, tuple[float, float, float]] = {
    "white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0),
    "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
}


class ImageStitch(Node):
    """Puts ``image2`` to the right of, below, left of or above ``image1``, optionally
    scaled to match its height (left/right) or width (up/down) and with a coloured gap."""

    display_name = "Stitch Images"
    category = "image/transform"
    image1 = Input("IMAGE")
    direction = Input(choices=["right", "down", "left", "up"], default="right")
    match_image_size = Input("BOOLEAN", default=True)
    spacing_width = Input("INT", default=0, min=0, max=1024, step=2)
    spacing_color = Input(choices=list(SPACING_COLORS), default="white")
    image2 = Input("IMAGE", optional=True)
    outputs = (Output("IMAGE"),)

    def execute(self, image1: Any, direction: str, match_image_size: bool, spacing_width: int,
                spacing_color: str, image2: Any = None) -> tuple:
        import torch

        if image2 is None:
            return (image1,)
        image1, image2 = _same_batch(image1, image2)
        horizontal = direction in ("left", "right")
        if match_image_size:
            h1, w1 = image1.shape[1:3]
            h2, w2 = image2.shape[1:3]
            aspect = w2 / h2  # the same float steps as ComfyUI, so sizes round alike
            if horizontal:
                size = (max(1, int(h1 * aspect)), h1)
            else:
                size = (w1, max(1, int(w1 / aspect)))
            image2 = resize_images(image2, size[0], size[1], "lanczos")
        else:
            # Pad the shorter side (centred) so the edges being joined are equally long.
            # ComfyUI pads with the spacing colour's grey value, or black for a colour.
            color = SPACING_COLORS[spacing_color]
            pad_value = color[0] if len(set(color)) == 1 else 0.0
            axis = 1 if horizontal else 2
            length = max(image1.shape[axis], image2.shape[axis])
            image1 = _pad_axis(image1, axis, length, pad_value)
            image2 = _pad_axis(image2, axis, length, pad_value)
        channels = max(image1.shape[-1], image2.shape[-1])
        image1, image2 = _pad_channels(image1, channels), _pad_channels(image2.to(image1.dtype), channels)
        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        if spacing_width > 0:
            gap = spacing_width + spacing_width % 2  # ComfyUI keeps the gap even
            parts.insert(1, _spacer(image1, image2, gap, horizontal, spacing_color))
        return (torch.cat(parts, dim=2 if horizontal else 1),)


def _same_batch(image1: Any, image2: Any) -> tuple[Any, Any]:
    """Repeats the last image of the smaller batch until both batches are equally long."""
    import torch

    size = max(image1.shape[0], image2.shape[0])

    def grow(image: Any) -> Any:
        extra = size - image.shape[0]
        return torch.cat([image, image[-1:].repeat(extra, 1, 1, 1)]) if extra else image

    return grow(image1), grow(image2)


def _pad_axis(image: Any, axis: int, length: int, value: float) -> Any:
    import torch.nn.functional as F

    missing = length - image.shape[axis]
    if missing <= 0:
        return image
    before, after = missing // 2, missing - missing // 2
    # F.pad lists (last dim first) pairs for C, W, H.
    pads = (0, 0, before, after) if axis == 2 else (0, 0, 0, 0, before, after)
    return F.pad(image, pads, mode="constant", value=value)


def _spacer(image1: Any, image2: Any, gap: int, horizontal: bool, color_name: str) -> Any:
    import torch

    channels = image1.shape[-1]
    if horizontal:
        shape = (image1.shape[0], max(image1.shape[1], image2.shape[1]), gap, channels)
    else:
        shape = (image1.shape[0], gap, max(image1.shape[2], image2.shape[2]), channels)
    spacer = torch.zeros(shape, dtype=image1.dtype)
    color = SPACING_COLORS[color_name]
    for index in range(min(3, channels)):
        spacer[..., index] = color[index]
    if channels == 4:
        spacer[..., 3] = 1.0
    return spacer
