"""Load CLIP vision encoders (ComfyUI's ``CLIP_VISION``) into transformers'
``CLIPVisionModelWithProjection``, offline, the architecture read from the weights' shapes.

Two key layouts, as ComfyUI reads them from ``models/clip_vision/`` and from unCLIP
checkpoints:

* transformers (``vision_model.embeddings.*``, ``vision_model.encoder.layers.N.*``,
  ``vision_model.post_layernorm.*``, ``visual_projection.weight`` ``[P, D]``): the
  ``clip_vision_g``/ViT-H/ViT-L files ComfyUI's users download; a whole ``CLIPModel`` file
  (text tower beside it) loads too, its text keys unread.
* OpenCLIP / OpenAI CLIP (``visual.class_embedding``, ``visual.conv1.weight``,
  ``visual.positional_embedding``, ``visual.ln_pre``/``ln_post``,
  ``visual.transformer.resblocks.N`` with a fused ``attn.in_proj_weight`` ``[3D, D]``,
  ``visual.proj`` ``[D, P]``): open_clip files, and an SD2.1-unCLIP checkpoint's image
  embedder under ``embedder.model.visual.``.

The config comes from the shapes: width from ``class_embedding``, patch size and channels
from the patch convolution, image size from the position count (``(size / patch)^2 + 1``),
layer count from the layers present, MLP width from ``fc1``, projection width from the
projection. Two things shapes do not tell are taken as ComfyUI's configs set them: 16
attention heads (every CLIP vision config ComfyUI ships: ViT-L, ViT-H, ViT-bigG) and the
activation, ``quick_gelu`` for width 1024 (OpenAI's ViT-L/14) and ``gelu`` otherwise (the
LAION ViT-H/bigG). A transformers ``config.json`` beside the file (an ``image_encoder/``
folder) replaces the derived config. SigLIP and DINOv2 encoders (which ComfyUI also loads
as CLIP_VISION) are refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from nodes.models import build, cast_weights
from nodes.models.errors import ModelLoadError, UnknownCheckpointError
from nodes.models.keymap import KeyMap, KeySource, gather, with_prefix
from nodes.models.keymap_clip import open_clip_source
from nodes.models.side_config import sibling_config
from nodes.models.state_source import StateSource, open_state

Shapes = Mapping[str, tuple[int, ...]]

# ComfyUI's clip_preprocess defaults (OpenAI CLIP's normalisation), RGB.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
UNCLIP_EMBEDDER = "embedder.model."  # SD2.1-unCLIP's image embedder (ComfyUI: clip_vision_prefix)
HEADS = 16  # every CLIP vision config of ComfyUI's (ViT-L/14, ViT-H/14, ViT-bigG/14)
_OPEN_FIXED = {
    "vision_model.embeddings.class_embedding": KeySource("class_embedding"),
    "vision_model.embeddings.patch_embedding.weight": KeySource("conv1.weight"),
    "vision_model.embeddings.position_embedding.weight": KeySource("positional_embedding"),
    "vision_model.pre_layrnorm.weight": KeySource("ln_pre.weight"),
    "vision_model.pre_layrnorm.bias": KeySource("ln_pre.bias"),
    "vision_model.post_layernorm.weight": KeySource("ln_post.weight"),
    "vision_model.post_layernorm.bias": KeySource("ln_post.bias"),
    "visual_projection.weight": KeySource("proj", "transpose"),
}


@dataclass(frozen=True)
class VisionLayout:
    """Where a vision tower sits in a file: ``prefix`` (ending in ``.`` or empty) before
    ``vision_model.``/``visual_projection.`` (``"hf"``) or before ``class_embedding``,
    ``conv1``... (``"open_clip"``, so it includes ``visual.``)."""

    prefix: str
    layout: str


@dataclass(frozen=True)
class LoadedClipVision:
    """A loaded encoder: the model (eval, no gradients), its input ``image_size`` in pixels,
    and the normalisation ``mean``/``std`` of its preprocessing."""

    model: CLIPVisionModelWithProjection
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def find_vision_layout(shapes: Shapes, prefix: str = "") -> VisionLayout | None:
    """The vision tower under ``prefix``, in either layout, or None."""
    if prefix + "vision_model.embeddings.class_embedding" in shapes:
        return VisionLayout(prefix, "hf")
    for base in (prefix + "visual.", prefix):
        if base + "class_embedding" in shapes and base + "conv1.weight" in shapes:
            return VisionLayout(base, "open_clip")
    return None


def _source_key(target: str, layout: str) -> KeySource:
    if layout == "hf":
        return KeySource(target)
    if target in _OPEN_FIXED:
        return _OPEN_FIXED[target]
    return open_clip_source(target.removeprefix("vision_model."))  # encoder.layers.N.* -> resblocks


def vision_key_map(target_keys: Iterable[str], layout: VisionLayout) -> KeyMap:
    """Every ``CLIPVisionModelWithProjection`` key -> its source key in the file (with prefix)."""
    return with_prefix({k: _source_key(k, layout.layout) for k in target_keys}, layout.prefix)


def _layer_count(shapes: Shapes, layout: VisionLayout) -> int:
    if layout.layout == "hf":
        head, tail = layout.prefix + "vision_model.encoder.layers.", ".layer_norm1.weight"
    else:
        head, tail = layout.prefix + "transformer.resblocks.", ".ln_1.weight"
    found = {k[len(head):-len(tail)] for k in shapes if k.startswith(head) and k.endswith(tail)}
    return len({int(n) for n in found if n.isdigit()})


def vision_config(shapes: Shapes, layout: VisionLayout) -> dict[str, Any]:
    """``CLIPVisionConfig`` arguments read from the shapes (see the module docstring)."""
    def shape(target: str) -> tuple[int, ...]:
        key = vision_key_map([target], layout)[target].key
        if key not in shapes:
            raise UnknownCheckpointError(f"CLIP vision model without {key!r}: not a CLIP vision encoder")
        return tuple(shapes[key])

    width = shape("vision_model.embeddings.class_embedding")[0]
    patch = shape("vision_model.embeddings.patch_embedding.weight")
    positions = shape("vision_model.embeddings.position_embedding.weight")[0]
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise UnknownCheckpointError(f"CLIP vision model with {positions} positions: not a square grid plus a class token")
    projection = shape("visual_projection.weight")  # [P, D] in transformers' naming (a transposed [D, P] in open_clip's)
    projection_dim = projection[0] if layout.layout == "hf" else projection[1]
    layers = _layer_count(shapes, layout)
    if layers == 0:
        raise UnknownCheckpointError("CLIP vision model without transformer layers")
    return {
        "hidden_size": width,
        "intermediate_size": shape("vision_model.encoder.layers.0.mlp.fc1.weight")[0],
        "num_hidden_layers": layers,
        "num_attention_heads": HEADS if width % HEADS == 0 else max(1, width // 64),
        "num_channels": patch[1],
        "patch_size": patch[-1],
        "image_size": grid * patch[-1],
        "projection_dim": projection_dim,
        "hidden_act": "quick_gelu" if width == 1024 else "gelu",
        "layer_norm_eps": 1e-5,
    }


def _refusal(shapes: Shapes) -> str:
    """Why a file is not a CLIP vision encoder, naming what it looks like."""
    keys = list(shapes)
    if any(k.startswith("vision_model.") for k in keys) and not any(k.endswith("class_embedding") for k in keys):
        return "it looks like a SigLIP vision encoder (no class embedding), which Latentgraph does not load"
    if any(".layer_scale1." in k or ".layer_scale2." in k for k in keys):
        return "it looks like a DINOv2 image encoder, which Latentgraph does not load"
    sample = ", ".join(sorted({".".join(k.split(".")[:2]) for k in keys})[:6])
    return f"no vision_model.* or visual.* CLIP vision tower found (keys start with {sample or 'nothing'})"


def load_clip_vision_from(source: StateSource, layout: VisionLayout, *, dtype: torch.dtype,
                          keep_narrow: bool = True, config: Mapping[str, Any] | None = None) -> LoadedClipVision:
    """Builds the encoder at ``layout`` from an open file: ``config`` (transformers
    ``CLIPVisionConfig`` fields) or the one read from the shapes; computing in ``dtype``,
    weight matrices kept in a narrower stored dtype with ``keep_narrow``."""
    cfg = dict(config) if config is not None else vision_config(source.shapes, layout)
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg))
    key_map = vision_key_map(model.state_dict().keys(), layout)
    narrow = cast_weights.keep_narrow_keys(model) if keep_narrow else set()
    narrow_sources = {key_map[key].key for key in narrow if key in key_map}
    try:
        state = gather(key_map, lambda key: source.read(key, dtype, keep_narrow=key in narrow_sources))
    except KeyError as exc:
        raise ModelLoadError(f"CLIP vision model: the file lacks tensor {exc.args[0]!r}") from exc
    model = build.fill(model, state, source.device, dtype)
    size = int(model.config.image_size)
    return LoadedClipVision(model, size, CLIP_MEAN, CLIP_STD)


def load_clip_vision(path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     keep_narrow: bool = True) -> LoadedClipVision:
    """Loads a CLIP vision file (``models/clip_vision/``) in either layout; raises
    ``UnknownCheckpointError`` naming what the file looks like when it holds no CLIP vision tower."""
    path = Path(path)
    with open_state(path, device, dtype) as source:
        layout = find_vision_layout(source.shapes)
        if layout is None:
            raise UnknownCheckpointError(f"{path.name} is not a CLIP vision model: {_refusal(source.shapes)}")
        side = sibling_config(path, ("CLIPVisionModelWithProjection",))
        config = {k: v for k, v in side.items() if k in CLIPVisionConfig().to_dict() and not k.startswith("_")} \
            if side is not None else None
        return load_clip_vision_from(source, layout, dtype=dtype, keep_narrow=keep_narrow, config=config)


def load_unclip_embedder(path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                         keep_narrow: bool = True) -> LoadedClipVision | None:
    """The image encoder inside an SD2.1-unCLIP checkpoint (``embedder.model.visual.*``), or
    None when the checkpoint holds none (ComfyUI's unCLIPCheckpointLoader then gives no CLIP_VISION)."""
    with open_state(Path(path), device, dtype) as source:
        layout = find_vision_layout(source.shapes, UNCLIP_EMBEDDER)
        if layout is None:
            return None
        return load_clip_vision_from(source, layout, dtype=dtype, keep_narrow=keep_narrow)
