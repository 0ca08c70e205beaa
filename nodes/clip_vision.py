"""CLIP vision, unCLIP and style-model nodes, as ComfyUI declares them: CLIPVisionLoader,
CLIPVisionEncode, unCLIPConditioning, unCLIPCheckpointLoader, StyleModelLoader and
StyleModelApply.

For SD2.1-unCLIP (image variations: the UNet takes a CLIP image embedding as its class
vector), SDXL "revision" (the image embedding in place of the pooled text embedding) and
SD1.x T2I-Adapter style models (style tokens appended to the prompt's). Loading is
``nodes.models.clip_vision_load`` and ``nodes.models.style_model_load``, encoding
``nodes.sd.clip_vision_encode``, the image vector made at sampling time ``nodes.sd.unclip``.
"""

from __future__ import annotations

from typing import Any

from graph import Input, Node, Output
from nodes.loaders import CheckpointLoaderSimple, file_state, keep_file_precision, runtime_dtypes
from nodes.models.folders import model_choices, models_of


def _clip_vision_handle(loaded: Any, device: Any, dtype: Any, source: Any) -> Any:
    from nodes.sd.clip_vision_encode import ClipVisionHandle

    return ClipVisionHandle(model=loaded.model, device=device, dtype=dtype, image_size=loaded.image_size,
                            mean=loaded.mean, std=loaded.std, source=source)


class CLIPVisionLoader(Node):
    """Loads a CLIP vision encoder (ViT-L/14, ViT-H/14, ViT-bigG/14...) from models/clip_vision:
    transformers (``vision_model.*``) or OpenCLIP (``visual.*``) keys, the size read from the file."""

    category = "loaders"
    clip_name = Input(choices=model_choices("clip_vision"), tooltip="file in models/clip_vision")
    outputs = (Output("CLIP_VISION"),)

    @classmethod
    def fingerprint(cls, context: Any, clip_name: str | None = None, **_: Any) -> list | None:
        return file_state(context, "clip_vision", clip_name) if clip_name is not None else None

    def execute(self, clip_name: str) -> tuple:
        from nodes.models.clip_vision_load import load_clip_vision

        device, dtypes = runtime_dtypes(self.context)
        path = models_of(self.context.runtime).resolve("clip_vision", clip_name)
        loaded = load_clip_vision(path, device=device, dtype=dtypes["text"],
                                  keep_narrow="text" in keep_file_precision(self.context))
        return (_clip_vision_handle(loaded, device, dtypes["text"], path),)


class CLIPVisionEncode(Node):
    """Encodes images with a CLIP vision model: ``crop`` "center" scales the shortest side
    to the model's size and cuts out the middle, "none" squashes the whole image."""

    category = "conditioning"
    clip_vision = Input("CLIP_VISION")
    image = Input("IMAGE")
    crop = Input(choices=["center", "none"])
    outputs = (Output("CLIP_VISION_OUTPUT"),)

    def execute(self, clip_vision: Any, image: Any, crop: str) -> tuple:
        from nodes.sd.clip_vision_encode import ClipVisionHandle, encode_image, working_bytes
        from nodes.sd.runtime import runtime_of

        if not isinstance(clip_vision, ClipVisionHandle):
            raise ValueError("clip_vision holds no CLIP vision model (an unCLIPCheckpointLoader whose checkpoint "
                             "has no image encoder gives none): load one with CLIPVisionLoader")
        with runtime_of(self.context).placed(clip_vision, working_bytes=working_bytes(int(image.shape[0]),
                                                                                         clip_vision)):
            return (encode_image(clip_vision, image, crop=crop == "center"),)


class unCLIPConditioning(Node):  # noqa: N801 - ComfyUI's class name
    """Adds an image's CLIP embedding to the conditioning, for SD2.1-unCLIP checkpoints and
    SDXL (revision). ``noise_augmentation`` noises the embedding (0..1 of its schedule) so the
    model follows the image less closely; ``strength`` 0 leaves the conditioning unchanged."""

    category = "conditioning"
    conditioning = Input("CONDITIONING")
    clip_vision_output = Input("CLIP_VISION_OUTPUT")
    strength = Input("FLOAT", default=1.0, min=-10.0, max=10.0, step=0.01)
    noise_augmentation = Input("FLOAT", default=0.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning: list, clip_vision_output: Any, strength: float,
                noise_augmentation: float) -> tuple:
        if strength == 0:
            return (conditioning,)
        added = {"clip_vision_output": clip_vision_output, "strength": float(strength),
                 "noise_augmentation": float(noise_augmentation)}
        out = []
        for entry in conditioning:
            if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[1], dict):
                raise ValueError("each conditioning entry must be [tensor, dict]")
            extras = dict(entry[1])  # a new dict and list: the cached input is never changed
            extras["unclip_conditioning"] = [*(extras.get("unclip_conditioning") or []), added]
            out.append([entry[0], extras])
        return (out,)


class unCLIPCheckpointLoader(Node):  # noqa: N801 - ComfyUI's class name
    """Loads an SD2.1-unCLIP checkpoint: its model, text encoder and VAE as
    CheckpointLoaderSimple does, and the CLIP vision model stored in it
    (``embedder.model.visual.*``; none when the checkpoint holds no image encoder)."""

    category = "loaders"
    ckpt_name = Input(choices=model_choices("checkpoints"), tooltip="file in models/checkpoints")
    outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"), Output("CLIP_VISION"))

    @classmethod
    def fingerprint(cls, context: Any, ckpt_name: str | None = None, **_: Any) -> list | None:
        return file_state(context, "checkpoints", ckpt_name) if ckpt_name is not None else None

    def execute(self, ckpt_name: str) -> tuple:
        from nodes.models.clip_vision_load import load_unclip_embedder

        model, clip, vae = CheckpointLoaderSimple.execute(self, ckpt_name)
        device, dtypes = runtime_dtypes(self.context)
        path = models_of(self.context.runtime).resolve("checkpoints", ckpt_name)
        vision = None
        if path.is_file():
            loaded = load_unclip_embedder(path, device=device, dtype=dtypes["text"],
                                          keep_narrow="text" in keep_file_precision(self.context))
            vision = _clip_vision_handle(loaded, device, dtypes["text"], path) if loaded is not None else None
        return (model, clip, vae, vision)


class StyleModelLoader(Node):
    """Loads a T2I-Adapter style model (SD1.x) from models/style_models."""

    category = "loaders"
    style_model_name = Input(choices=model_choices("style_models"), tooltip="file in models/style_models")
    outputs = (Output("STYLE_MODEL"),)

    @classmethod
    def fingerprint(cls, context: Any, style_model_name: str | None = None, **_: Any) -> list | None:
        return file_state(context, "style_models", style_model_name) if style_model_name is not None else None

    def execute(self, style_model_name: str) -> tuple:
        from nodes.models.style_model_load import load_style_model

        return (load_style_model(models_of(self.context.runtime).resolve("style_models", style_model_name)),)


class StyleModelApply(Node):
    """Appends a style model's tokens for an image's CLIP vision output to each prompt.

    ``strength_type`` "multiply" scales the tokens by ``strength``. "attn_bias" appends them
    unscaled: ComfyUI then records an attention bias in the conditioning, which its SD1/SD2/SDXL
    models do not use, so the image is the same as at strength 1 there too.
    """

    category = "conditioning/style_model"
    conditioning = Input("CONDITIONING")
    style_model = Input("STYLE_MODEL")
    clip_vision_output = Input("CLIP_VISION_OUTPUT")
    strength = Input("FLOAT", default=1.0, min=0.0, max=10.0, step=0.001)
    strength_type = Input(choices=["multiply", "attn_bias"])
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning: list, style_model: Any, clip_vision_output: Any, strength: float,
                strength_type: str) -> tuple:
        import torch

        tokens = style_model.get_cond(clip_vision_output).flatten(0, 1).unsqueeze(0)  # [1, N * num_token, D]
        if strength_type == "multiply":
            tokens = tokens * strength
        out = []
        for entry in conditioning:
            if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[1], dict):
                raise ValueError("each conditioning entry must be [tensor, dict]")
            text = entry[0]
            if text.shape[-1] != tokens.shape[-1]:
                raise ValueError(f"the style model makes tokens {tokens.shape[-1]} wide but the conditioning is "
                                 f"{text.shape[-1]} wide: T2I-Adapter style models are for SD1.x")
            out.append([torch.cat([text, tokens.to(text.dtype).expand(text.shape[0], -1, -1)], dim=1),
                        dict(entry[1])])
        return (out,)
