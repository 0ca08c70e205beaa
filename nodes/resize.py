"""ComfyUI's Resize Image/Mask node: one node for every way of resizing an IMAGE or MASK.

Its ``resize_type`` is a DynamicCombo (``Input.dynamic``): each choice reveals its own
inputs, named ``resize_type.<input>`` in API-format prompts, as ComfyUI names them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from graph import Input, Node, Output
from nodes.image import MAX_RESOLUTION, center_crop, resize_images

SCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
IMAGE_OR_MASK = "IMAGE,MASK"

# Each choice of resize_type and the inputs it reveals (ComfyUI's order of both).
RESIZE_TYPES: dict[str, tuple[str, ...]] = {
    "scale dimensions": ("resize_type.width", "resize_type.height", "resize_type.crop"),
    "scale by multiplier": ("resize_type.multiplier",),
    "scale longer dimension": ("resize_type.longer_size",),
    "scale shorter dimension": ("resize_type.shorter_size",),
    "scale width": ("resize_type.width",),
    "scale height": ("resize_type.height",),
    "scale total pixels": ("resize_type.megapixels",),
    "match size": ("resize_type.match", "resize_type.crop"),
    "scale to multiple": ("resize_type.multiple",),
}

_REVEALED = {
    "resize_type.width": Input("INT", default=512, min=0, max=MAX_RESOLUTION, step=1, optional=True,
                               tooltip="0 keeps the aspect ratio"),
    "resize_type.height": Input("INT", default=512, min=0, max=MAX_RESOLUTION, step=1, optional=True,
                                tooltip="0 keeps the aspect ratio"),
    "resize_type.crop": Input(choices=["disabled", "center"], default="center", optional=True),
    "resize_type.multiplier": Input("FLOAT", default=1.0, min=0.01, max=8.0, step=0.01, optional=True),
    "resize_type.longer_size": Input("INT", default=512, min=0, max=MAX_RESOLUTION, step=1, optional=True),
    "resize_type.shorter_size": Input("INT", default=512, min=0, max=MAX_RESOLUTION, step=1, optional=True),
    "resize_type.megapixels": Input("FLOAT", default=1.0, min=0.01, max=16.0, step=0.01, optional=True),
    "resize_type.match": Input(IMAGE_OR_MASK, optional=True),
    "resize_type.multiple": Input("INT", default=8, min=1, max=MAX_RESOLUTION, step=1, optional=True),
}


def _declare_revealed(cls: type[Node]) -> type[Node]:
    # The names hold a dot, so they are set here rather than written in the class body.
    for name, inp in _REVEALED.items():
        setattr(cls, name, inp)
    return cls


@_declare_revealed
class ResizeImageMaskNode(Node):
    """Resizes an image or a mask: to a size, by a factor, by its longer or shorter side,
    to a pixel count, to another image's size, or down to a multiple of a number."""

    display_name = "Resize Image/Mask"
    category = "transform"
    input = Input(IMAGE_OR_MASK)
    resize_type = Input(dynamic=RESIZE_TYPES, default="scale dimensions")
    scale_method = Input(choices=SCALE_METHODS, default="area")
    outputs = (Output(IMAGE_OR_MASK, "resized"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        """The resized tensor's size (``graph.estimate``): a small image scaled to 16384
        pixels a side is refused before it is made."""
        from graph.estimate import MemoryEstimate, TensorSize

        source = inputs.get("input")
        if not isinstance(source, TensorSize) or len(source.shape) not in (3, 4):
            return None
        size = _estimated_size(inputs, source.shape[1], source.shape[2])
        if size is None:
            return None
        (height, width), cause = size
        return MemoryEstimate((TensorSize((source.shape[0], height, width, *source.shape[3:])),), cause=cause)

    def execute(self, input: Any, resize_type: str, scale_method: str, **revealed: Any) -> tuple:
        def arg(name: str) -> Any:
            value = revealed.get(f"resize_type.{name}")
            if value is None:
                raise ValueError(f"resize_type {resize_type!r} needs the input resize_type.{name}")
            return value

        if resize_type == "scale dimensions":
            return (scale_dimensions(input, arg("width"), arg("height"), scale_method, arg("crop")),)
        if resize_type == "scale by multiplier":
            height, width = _size(input)
            multiplier = arg("multiplier")
            return (resize_any(input, round(width * multiplier), round(height * multiplier), scale_method),)
        if resize_type in ("scale longer dimension", "scale shorter dimension"):
            longer = resize_type == "scale longer dimension"
            side = arg("longer_size" if longer else "shorter_size")
            return (scale_side(input, side, scale_method, longer),)
        if resize_type == "scale width":
            return (scale_dimensions(input, arg("width"), 0, scale_method, "disabled"),)
        if resize_type == "scale height":
            return (scale_dimensions(input, 0, arg("height"), scale_method, "disabled"),)
        if resize_type == "scale total pixels":
            height, width = _size(input)
            scale = math.sqrt(int(arg("megapixels") * 1024 * 1024) / (width * height))
            return (resize_any(input, round(width * scale), round(height * scale), scale_method),)
        if resize_type == "match size":
            height, width = _size(arg("match"))
            return (resize_any(input, width, height, scale_method, arg("crop")),)
        if resize_type == "scale to multiple":
            return (scale_to_multiple(input, arg("multiple"), scale_method),)
        raise ValueError(f"unknown resize_type {resize_type!r}")


def _estimated_size(inputs: Mapping[str, Any], height: int, width: int) -> tuple[tuple[int, int], str] | None:
    """(height, width) the node would make from an input of ``height`` x ``width``, and the
    input that sets it; None when it cannot tell."""
    from graph.estimate import TensorSize, float_input, int_input

    kind = inputs.get("resize_type")
    if kind == "scale dimensions" or kind in ("scale width", "scale height"):
        new_w = int_input(inputs, "resize_type.width") if kind != "scale height" else 0
        new_h = int_input(inputs, "resize_type.height") if kind != "scale width" else 0
        if new_w == 0 and new_h == 0:
            return (height, width), "resize_type"
        new_w = new_w or max(1, round(width * new_h / max(height, 1)))
        new_h = new_h or max(1, round(height * new_w / max(width, 1)))
        return (new_h, new_w), "resize_type.width" if new_w >= new_h else "resize_type.height"
    if kind == "scale by multiplier":
        scale = float_input(inputs, "resize_type.multiplier", 1.0)
        return (round(height * scale), round(width * scale)), "resize_type.multiplier"
    if kind in ("scale longer dimension", "scale shorter dimension"):
        name = "resize_type.longer_size" if kind == "scale longer dimension" else "resize_type.shorter_size"
        side = int_input(inputs, name, 512)
        longer = kind == "scale longer dimension"
        scale = side / max(1, max(height, width) if longer else min(height, width))
        return (round(height * scale), round(width * scale)), name
    if kind == "scale total pixels":
        scale = math.sqrt(float_input(inputs, "resize_type.megapixels", 1.0) * 1024 * 1024 / max(1, height * width))
        return (round(height * scale), round(width * scale)), "resize_type.megapixels"
    if kind == "match size":
        match = inputs.get("resize_type.match")
        if isinstance(match, TensorSize) and len(match.shape) in (3, 4):
            return (match.shape[1], match.shape[2]), "resize_type.match"
        return None
    if kind == "scale to multiple":
        return (height, width), "resize_type.multiple"
    return None


def _size(tensor: Any) -> tuple[int, int]:
    """(height, width) of an IMAGE [B, H, W, C] or a MASK [B, H, W] / [H, W]."""
    if tensor.ndim == 4:
        return int(tensor.shape[1]), int(tensor.shape[2])
    return int(tensor.shape[-2]), int(tensor.shape[-1])


def resize_any(tensor: Any, width: int, height: int, method: str, crop: str = "disabled") -> Any:
    """An IMAGE or MASK resized to ``width`` x ``height``; ``crop="center"`` first cuts
    it to the target's aspect ratio around the centre."""
    is_image = tensor.ndim == 4
    image = tensor if is_image else tensor.reshape(-1, *tensor.shape[-2:]).unsqueeze(-1)
    width, height = max(1, int(width)), max(1, int(height))
    if crop == "center":
        image = center_crop(image, width / height)
    if not is_image and method == "lanczos":
        # Pillow's Lanczos path works on RGB frames: run the mask as a grey image.
        resized = resize_images(image.expand(-1, -1, -1, 3), width, height, method)[..., :1]
    else:
        resized = resize_images(image, width, height, method)
    return resized if is_image else resized[..., 0]


def scale_dimensions(tensor: Any, width: int, height: int, method: str, crop: str) -> Any:
    """To ``width`` x ``height``; 0 for one side keeps the aspect ratio, 0 for both keeps the size."""
    if width == 0 and height == 0:
        return tensor
    old_h, old_w = _size(tensor)
    if width == 0:
        width = max(1, round(old_w * height / old_h))
    elif height == 0:
        height = max(1, round(old_h * width / old_w))
    return resize_any(tensor, width, height, method, crop)


def scale_side(tensor: Any, size: int, method: str, longer: bool) -> Any:
    """Scales so the longer (or shorter) side is ``size`` pixels, keeping the aspect ratio."""
    height, width = _size(tensor)
    if height == width:
        return resize_any(tensor, size, size, method)
    if (height > width) == longer:
        return resize_any(tensor, round(width / height * size), size, method)
    return resize_any(tensor, size, round(height / width * size), method)


def scale_to_multiple(tensor: Any, multiple: int, method: str) -> Any:
    """Scales to cover the largest multiple-of-``multiple`` size that fits, then cuts the
    centre to exactly that size, so both sides become multiples of ``multiple``."""
    if multiple <= 1:
        return tensor
    height, width = _size(tensor)
    target_w, target_h = width // multiple * multiple, height // multiple * multiple
    if target_w == 0 or target_h == 0 or (target_w, target_h) == (width, height):
        return tensor
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w >= scale_h:
        scaled_w, scaled_h = target_w, max(target_h, math.ceil(height * scale_w))
    else:
        scaled_w, scaled_h = max(target_w, math.ceil(width * scale_h)), target_h
    scaled = resize_any(tensor, scaled_w, scaled_h, method)
    x0, y0 = (scaled_w - target_w) // 2, (scaled_h - target_h) // 2
    if scaled.ndim == 4:
        return scaled[:, y0:y0 + target_h, x0:x0 + target_w, :]
    return scaled[..., y0:y0 + target_h, x0:x0 + target_w]
