"""Conditioning nodes: text prompts -> CONDITIONING, and CLIP options.

CONDITIONING is ComfyUI's list of ``[cond [1, 77k, D], extras]``; SDXL adds
``extras["pooled_output"]`` [1, 1280]. Entries may also carry where they apply, read by
the sampler (:mod:`nodes.sampling.regions`): ``area`` ``(height, width, y, x)`` in latent
pixels or ``("percentage", h, w, y, x)``, ``strength``, ``mask`` [B, H, W] with
``mask_strength``, and ``set_area_to_bounds``.
"""

from __future__ import annotations

import logging
from typing import Any

from graph import Input, Node, Output
from nodes.image import MAX_RESOLUTION
from nodes.models.folders import models_of

logger = logging.getLogger(__name__)


class CLIPTextEncode(Node):
    """Encodes a prompt. Supports ``(word:1.2)``, ``(word)``, ``[word]``, ``embedding:name``
    (textual inversion, from models/embeddings) and prompts of any length."""

    category = "conditioning"
    text = Input("STRING", multiline=True, default="", tooltip="the prompt")
    clip = Input("CLIP")
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def fingerprint(cls, context: Any, text: str | None = None, **_: Any) -> list | None:
        """The embedding files the prompt names (every embedding file when the text is linked)."""
        from nodes.clip.embeddings import embedding_files_state
        from nodes.clip.prompt_weights import EMBEDDING_PREFIX, embedding_names

        if isinstance(text, str) and EMBEDDING_PREFIX not in text:
            return None
        folders = models_of(context.runtime).folders("embeddings")
        return embedding_files_state(folders, embedding_names(text) if isinstance(text, str) else None)

    def execute(self, text: str, clip: Any) -> tuple:
        from nodes.sd.runtime import runtime_of
        from nodes.sd.text_encode import encode_prompt

        runtime = runtime_of(self.context)
        with runtime.placed(clip):
            cond, pooled = encode_prompt(clip, text, runtime.models.folders("embeddings"))
        extras = {"pooled_output": pooled} if pooled is not None else {}
        return ([[cond, extras]],)


class CLIPSetLastLayer(Node):
    """Stops the text encoder early ("CLIP skip"): -1 is the last layer, -2 the one before."""

    category = "conditioning"
    clip = Input("CLIP")
    stop_at_clip_layer = Input("INT", default=-1, min=-24, max=-1, step=1)
    outputs = (Output("CLIP"),)

    def execute(self, clip: Any, stop_at_clip_layer: int) -> tuple:
        return (clip.with_last_layer(stop_at_clip_layer),)


SIZE = {"min": 0, "max": MAX_RESOLUTION}


class CLIPTextEncodeSDXL(Node):
    """Encodes SDXL's two prompts separately, ``text_l`` for CLIP-L and ``text_g`` for
    OpenCLIP bigG, with the size conditioning SDXL was trained on: the original image size,
    the crop's top-left corner and the target size, in pixels."""

    category = "advanced/conditioning"
    clip = Input("CLIP")
    width = Input("INT", default=1024, **SIZE)
    height = Input("INT", default=1024, **SIZE)
    crop_w = Input("INT", default=0, **SIZE)
    crop_h = Input("INT", default=0, **SIZE)
    target_width = Input("INT", default=1024, **SIZE)
    target_height = Input("INT", default=1024, **SIZE)
    text_g = Input("STRING", multiline=True, default="", tooltip="the prompt for OpenCLIP bigG")
    text_l = Input("STRING", multiline=True, default="", tooltip="the prompt for CLIP-L")
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def fingerprint(cls, context: Any, text_g: str | None = None, text_l: str | None = None, **_: Any) -> list | None:
        """The embedding files the prompts name (every embedding file when one is linked)."""
        text = f"{text_g} {text_l}" if isinstance(text_g, str) and isinstance(text_l, str) else None
        return CLIPTextEncode.fingerprint(context, text=text)

    def execute(self, clip: Any, width: int, height: int, crop_w: int, crop_h: int, target_width: int,
                target_height: int, text_g: str, text_l: str) -> tuple:
        from nodes.sd.runtime import runtime_of
        from nodes.sd.text_encode import encode_prompt

        if clip.family != "sdxl" or len(clip.encoders) != 2:
            raise ValueError(f"CLIPTextEncodeSDXL needs an SDXL CLIP (two text encoders); this one is {clip.family}")
        runtime = runtime_of(self.context)
        with runtime.placed(clip):
            cond, pooled = encode_prompt(clip, text_l, runtime.models.folders("embeddings"), texts=(text_l, text_g))
        extras = {"pooled_output": pooled, "width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
                  "target_width": target_width, "target_height": target_height}
        return ([[cond, extras]],)


def _with_options(conditioning: list, **options: Any) -> list:
    """A copy of a CONDITIONING list with ``options`` set in every entry's extras."""
    return [[cond, {**extras, **options}] for cond, extras in conditioning]


class ConditioningConcat(Node):
    """Appends the tokens of ``conditioning_from`` (its first entry) to every entry of
    ``conditioning_to``: one cross-attention over both prompts, rather than two predictions
    averaged (ConditioningCombine). The entries keep ``conditioning_to``'s options."""

    category = "conditioning"
    conditioning_to = Input("CONDITIONING")
    conditioning_from = Input("CONDITIONING")
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning_to: list, conditioning_from: list) -> tuple:
        import torch

        if not conditioning_from:
            return (list(conditioning_to),)
        if len(conditioning_from) > 1:
            logger.warning("ConditioningConcat: conditioning_from has %d entries; only the first is used",
                           len(conditioning_from))
        extra = conditioning_from[0][0]
        joined = []
        for cond, extras in conditioning_to:
            if cond.shape[-1] != extra.shape[-1]:
                raise ValueError(f"cannot join conditionings of widths {cond.shape[-1]} and {extra.shape[-1]} "
                                 "(from different text encoders?)")
            joined.append([torch.cat([cond, extra.to(cond.device, cond.dtype).expand(cond.shape[0], -1, -1)], dim=1),
                           dict(extras)])
        return (joined,)


class ConditioningSetTimestepRange(Node):
    """Lets the conditioning take part only between two points of the sampling, as fractions
    of the way from the first step (0) to the last (1): e.g. one prompt for the composition
    (0 to 0.4) and another for the details (0.4 to 1), combined."""

    category = "advanced/conditioning"
    conditioning = Input("CONDITIONING")
    start = Input("FLOAT", default=0.0, min=0.0, max=1.0, step=0.001)
    end = Input("FLOAT", default=1.0, min=0.0, max=1.0, step=0.001)
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning: list, start: float, end: float) -> tuple:
        return (_with_options(conditioning, start_percent=start, end_percent=end),)


class ConditioningCombine(Node):
    """Joins two conditionings: the sampler evaluates every entry and averages the
    predictions per pixel, each over its own area or mask."""

    category = "conditioning"
    conditioning_1 = Input("CONDITIONING")
    conditioning_2 = Input("CONDITIONING")
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning_1: list, conditioning_2: list) -> tuple:
        return (list(conditioning_1) + list(conditioning_2),)


class ConditioningSetArea(Node):
    """Limits a conditioning to a rectangle, in pixels (stored as latent pixels: / 8).

    The UNet sees only that part of the latent for this entry; ``strength`` weighs it
    against other entries covering the same pixels. Edges inside the image fade over 64
    pixels so regions blend.
    """

    category = "conditioning"
    conditioning = Input("CONDITIONING")
    width = Input("INT", default=64, min=64, max=MAX_RESOLUTION, step=8)
    height = Input("INT", default=64, min=64, max=MAX_RESOLUTION, step=8)
    x = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=8)
    y = Input("INT", default=0, min=0, max=MAX_RESOLUTION, step=8)
    strength = Input("FLOAT", default=1.0, min=0.0, max=10.0, step=0.01)
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning: list, width: int, height: int, x: int, y: int, strength: float) -> tuple:
        area = (height // 8, width // 8, y // 8, x // 8)
        return (_with_options(conditioning, area=area, strength=strength, set_area_to_bounds=False),)


class ConditioningSetAreaPercentage(Node):
    """Limits a conditioning to a rectangle given as fractions of the image size."""

    category = "conditioning"
    conditioning = Input("CONDITIONING")
    width = Input("FLOAT", default=1.0, min=0.0, max=1.0, step=0.01)
    height = Input("FLOAT", default=1.0, min=0.0, max=1.0, step=0.01)
    x = Input("FLOAT", default=0.0, min=0.0, max=1.0, step=0.01)
    y = Input("FLOAT", default=0.0, min=0.0, max=1.0, step=0.01)
    strength = Input("FLOAT", default=1.0, min=0.0, max=10.0, step=0.01)
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning: list, width: float, height: float, x: float, y: float,
                strength: float) -> tuple:
        area = ("percentage", height, width, y, x)
        return (_with_options(conditioning, area=area, strength=strength, set_area_to_bounds=False),)


class ConditioningSetMask(Node):
    """Limits a conditioning to a mask (any size; resized to the latent), weighted by
    ``strength``. "mask bounds" also crops what the UNet sees to the mask's bounding box."""

    category = "conditioning"
    conditioning = Input("CONDITIONING")
    mask = Input("MASK")
    strength = Input("FLOAT", default=1.0, min=0.0, max=10.0, step=0.01)
    set_cond_area = Input(choices=["default", "mask bounds"], default="default")
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning: list, mask: Any, strength: float, set_cond_area: str) -> tuple:
        if mask.ndim < 3:
            mask = mask.unsqueeze(0)
        return (_with_options(conditioning, mask=mask, mask_strength=strength,
                              set_area_to_bounds=set_cond_area != "default"),)


class ConditioningZeroOut(Node):
    """Replaces the embeddings (and SDXL's pooled embedding) by zeros, keeping the options."""

    category = "advanced/conditioning"
    conditioning = Input("CONDITIONING")
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning: list) -> tuple:
        import torch

        out = []
        for cond, extras in conditioning:
            extras = dict(extras)
            if extras.get("pooled_output") is not None:
                extras["pooled_output"] = torch.zeros_like(extras["pooled_output"])
            out.append([torch.zeros_like(cond), extras])
        return (out,)


class ConditioningAverage(Node):
    """Blends embeddings: ``to * conditioning_to_strength + from * (1 - conditioning_to_strength)``.

    Only the first entry of ``conditioning_from`` is used (a warning says so when it has
    more). Its tokens are cut or zero-padded to each ``conditioning_to`` entry's length;
    SDXL pooled embeddings are blended alike.
    """

    category = "conditioning"
    conditioning_to = Input("CONDITIONING")
    conditioning_from = Input("CONDITIONING")
    conditioning_to_strength = Input("FLOAT", default=1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning_to: list, conditioning_from: list, conditioning_to_strength: float) -> tuple:
        import torch

        if not conditioning_from:
            raise ValueError("conditioning_from is empty")
        if len(conditioning_from) > 1:
            logger.warning("ConditioningAverage: conditioning_from has %d entries; only the first is used",
                           len(conditioning_from))
        t = conditioning_to_strength
        source, source_extras = conditioning_from[0]
        source_pooled = source_extras.get("pooled_output")
        out = []
        for cond, extras in conditioning_to:
            if source.shape[-1] != cond.shape[-1]:
                raise ValueError(f"cannot average embeddings of width {cond.shape[-1]} and {source.shape[-1]}")
            other = source[:, :cond.shape[1]]
            if other.shape[1] < cond.shape[1]:
                pad = torch.zeros((other.shape[0], cond.shape[1] - other.shape[1], cond.shape[2]), dtype=other.dtype)
                other = torch.cat([other, pad], dim=1)
            extras = dict(extras)
            pooled = extras.get("pooled_output", source_pooled)
            if source_pooled is not None and pooled is not None:
                extras["pooled_output"] = pooled * t + source_pooled * (1.0 - t)
            out.append([cond * t + other * (1.0 - t), extras])
        return (out,)
