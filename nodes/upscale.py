"""Upscale-model nodes: UpscaleModelLoader and ImageUpscaleWithModel (ComfyUI's names and inputs).

Models are read by spandrel (``nodes.upscale_model``): ESRGAN, Real-ESRGAN (and its
Compact variant), SwinIR, Swin2SR, HAT, DAT, OmniSR, SPAN and the rest it detects. Images
are processed in 512-pixel tiles overlapping by 32 pixels, with progress per tile; on
out-of-memory the tile size is halved, down to 128.
"""

from __future__ import annotations

from typing import Any

from graph import Input, Node, Output
from nodes.loaders import file_state, runtime_device
from nodes.models.folders import model_choices, models_of

TILE = 512
OVERLAP = 32
# Working memory of one tile, per output pixel, in values of the model's dtype: the order of
# the widest activations of ESRGAN-class networks (64-channel features at the output size,
# a few alive at once). A heuristic for making room on the GPU, not a measurement.
ACTIVATIONS_PER_OUTPUT_PIXEL = 384


class UpscaleModelLoader(Node):
    """Loads an image upscale model (any architecture spandrel recognises) from models/upscale_models."""

    category = "loaders"
    model_name = Input(choices=model_choices("upscale_models"), tooltip="file in models/upscale_models")
    outputs = (Output("UPSCALE_MODEL"),)

    @classmethod
    def fingerprint(cls, context: Any, model_name: str | None = None) -> list | None:
        return file_state(context, "upscale_models", model_name) if model_name is not None else None

    def execute(self, model_name: str) -> tuple:
        from nodes.upscale_model.load import load_upscale_model

        device, dtype = runtime_device(self.context)
        path = models_of(self.context.runtime).resolve("upscale_models", model_name)
        return (load_upscale_model(path, device=device, dtype=dtype),)


class ImageUpscaleWithModel(Node):
    """Upscales images with an upscale model, tile by tile (IMAGE [B, H, W, C] -> [B, H*s, W*s, C])."""

    category = "image/upscaling"
    upscale_model = Input("UPSCALE_MODEL")
    image = Input("IMAGE")
    outputs = (Output("IMAGE"),)

    def execute(self, upscale_model: Any, image: Any) -> tuple:
        from nodes.sd.runtime import runtime_of
        from nodes.upscale_model.tiled import tiled_apply_fitting

        channels = image.shape[-1]
        if channels != upscale_model.input_channels:
            raise ValueError(f"{upscale_model.name} takes {upscale_model.input_channels}-channel images; "
                             f"this image has {channels} channels")
        pixels = image.movedim(-1, 1)
        element = 2 if "16" in str(upscale_model.dtype) else 4
        working = (TILE * upscale_model.scale) ** 2 * ACTIVATIONS_PER_OUTPUT_PIXEL * element
        with runtime_of(self.context).placed(upscale_model, working_bytes=working):
            out = tiled_apply_fitting(pixels, upscale_model, scale=upscale_model.scale,
                                      out_channels=upscale_model.output_channels, tile=TILE, overlap=OVERLAP,
                                      progress=self.context.progress)
        return (out.movedim(1, -1).clamp(0.0, 1.0),)
