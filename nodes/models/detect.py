"""Detect a single-file checkpoint's model family from key names and tensor shapes.

Only the header is read (``safe_open``: names, shapes, metadata; no tensor data).
Detection is structural, so tiny test checkpoints and full-size ones are told apart the
same way:

* ``sdxl``: two embedders, ``conditioner.embedders.0.transformer.text_model.*`` (HF CLIP)
  and ``conditioner.embedders.1.model.*`` (OpenCLIP), and a UNet ``label_emb`` (SDXL's
  ``adm_in``; 2816 in the real model).
* ``sd2``: one OpenCLIP encoder under ``cond_stage_model.model.*``. With a UNet
  ``label_emb`` it is SD2.1-unCLIP (ComfyUI's SD21UnclipL/H, adm 1536/2048), told by its
  ``noise_augmentor.*`` buffers, its image embedder ``embedder.model.*`` or those widths.
* ``sd1``: one HF CLIP encoder under ``cond_stage_model.transformer.text_model.*``.

The UNet's cross-attention width must equal the text width (SDXL: the sum of both
encoders' widths), else the file is refused. ``in_channels`` is read from ``conv_in``
(4 normal, 9 inpainting).

Prediction type: LDM files do not say. In order: an explicit override; metadata
(``latentgraph.prediction_type``, ``modelspec.prediction_type``, ``prediction_type``, or the
``latentgraph.config`` architecture config); a ``v_pred`` key in the file (ComfyUI's
marker); otherwise the documented rule — SD2.x defaults to ``v_prediction`` (its 768
releases are v-models; the 512-base eps model needs an override or metadata) and SD1.x
and SDXL to ``epsilon``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open

from nodes.models.errors import UnknownCheckpointError

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_CLIP = "cond_stage_model.transformer."
SD2_CLIP = "cond_stage_model.model."
SDXL_CLIP_L = "conditioner.embedders.0.transformer."
SDXL_CLIP_G = "conditioner.embedders.1.model."
UNCLIP_NOISE_AUGMENTOR = "noise_augmentor."
UNCLIP_EMBEDDER = "embedder.model."
CONFIG_METADATA_KEY = "latentgraph.config"
PREDICTION_TYPES = ("epsilon", "v_prediction")
_PREDICTION_ALIASES = {
    "eps": "epsilon",
    "epsilon": "epsilon",
    "v": "v_prediction",
    "v_prediction": "v_prediction",
}
_PREDICTION_METADATA_KEYS = ("latentgraph.prediction_type", "modelspec.prediction_type", "prediction_type")

Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class TextEncoderLayout:
    """One text encoder inside a checkpoint: its key prefix (ending in ``.``; for ``"hf"`` the
    level holding ``embeddings.``/``encoder.``, usually ``....transformer.text_model.``), its
    layout (``"hf"`` or ``"open_clip"``) and its width (hidden size, from the token embedding)."""

    prefix: str
    layout: str
    width: int


@dataclass(frozen=True)
class CheckpointInfo:
    """What detection found in a checkpoint header.

    ``family``: ``"sd1"``, ``"sd2"`` or ``"sdxl"``. ``config_name``: the bundled config
    folder to build from (``sd1``, ``sd2``, ``sd2_v``, ``sdxl``). ``prediction_type``:
    ``"epsilon"`` or ``"v_prediction"``, and ``prediction_source`` says why. ``in_channels``:
    UNet input channels (4, or 9 for inpainting). ``context_dim``: cross-attention width.
    ``adm_channels``: the UNet ``label_emb`` input width (SDXL's size/pooled vector,
    SD2.1-unCLIP's image vector; 0 when absent). ``arch_config``: the
    architecture config stored in the file's metadata, if any.
    """

    family: str
    config_name: str
    prediction_type: str
    prediction_source: str
    in_channels: int
    context_dim: int
    adm_channels: int
    text_encoders: tuple[TextEncoderLayout, ...]
    has_vae: bool
    arch_config: dict[str, Any] | None = field(default=None, compare=False)


def read_header(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Return ``(shapes, metadata)`` of a safetensors file without reading tensor data."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        metadata = dict(f.metadata() or {})
    return shapes, metadata


def describe(shapes: Shapes, limit: int = 8) -> str:
    """A short human summary of a state dict: the commonest key prefixes and a few shapes."""
    prefixes = Counter(".".join(k.split(".")[:2]) for k in shapes)
    top = ", ".join(f"{p}.* ({n})" for p, n in prefixes.most_common(limit))
    probes = [k for k in (UNET + "input_blocks.0.0.weight", UNET + "label_emb.0.0.weight") if k in shapes]
    probes += [k for k in shapes if k.endswith("attn2.to_k.weight")][:1]
    probes += [k for k in shapes if k.endswith("token_embedding.weight")][:2]
    shown = "; ".join(f"{k} {list(shapes[k])}" for k in probes)
    return f"{len(shapes)} tensors; prefixes: {top or 'none'}" + (f"; shapes: {shown}" if shown else "")


def arch_config_from_metadata(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    """Parse the ``latentgraph.config`` JSON architecture config, if the file carries one."""
    raw = metadata.get(CONFIG_METADATA_KEY)
    if raw is None:
        return None
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UnknownCheckpointError(f"metadata {CONFIG_METADATA_KEY} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict):
        raise UnknownCheckpointError(f"metadata {CONFIG_METADATA_KEY} must be a JSON object")
    return cfg


def normalize_prediction_type(value: str) -> str:
    """Map ``eps``/``epsilon``/``v``/``v_prediction`` to ``epsilon`` or ``v_prediction``."""
    key = value.strip().lower()
    if key not in _PREDICTION_ALIASES:
        raise ValueError(f"unknown prediction type {value!r}; expected one of {PREDICTION_TYPES}")
    return _PREDICTION_ALIASES[key]


def _text_encoder(shapes: Shapes, prefix: str, layout: str) -> TextEncoderLayout | None:
    # HF layout: ``<prefix>text_model.embeddings...`` (current) or ``<prefix>embeddings...``
    # (files saved with transformers < 4.x); the layout's prefix is where ``embeddings.`` sits.
    candidates = [prefix + "text_model.", prefix] if layout == "hf" else [prefix]
    for base in candidates:
        token = base + ("embeddings.token_embedding.weight" if layout == "hf" else "token_embedding.weight")
        if token in shapes:
            return TextEncoderLayout(base, layout, int(shapes[token][1]))
    return None


def _context_dim(shapes: Shapes) -> int:
    keys = sorted(k for k in shapes if k.startswith(UNET) and k.endswith("attn2.to_k.weight"))
    return int(shapes[keys[0]][1]) if keys else 0


def _prediction(
    family: str,
    shapes: Shapes,
    metadata: Mapping[str, str],
    arch: Mapping[str, Any] | None,
    override: str | None,
) -> tuple[str, str]:
    if override is not None:
        return normalize_prediction_type(override), "override"
    for key in _PREDICTION_METADATA_KEYS:
        if metadata.get(key):
            return normalize_prediction_type(metadata[key]), f"metadata {key}"
    if arch and arch.get("prediction_type"):
        return normalize_prediction_type(arch["prediction_type"]), f"metadata {CONFIG_METADATA_KEY}"
    if "v_pred" in shapes:
        return "v_prediction", "v_pred key"
    if family == "sd2":
        return "v_prediction", "default rule: SD2.x checkpoints are taken as 768 v-prediction"
    return "epsilon", f"default rule: {family} is eps-prediction"


def _is_unclip(shapes: Shapes) -> bool:
    """An SD2 UNet with ``label_emb`` is SD2.1-unCLIP when the file has the unCLIP parts or
    the adm width of one of its releases (ViT-L 2 x 768, ViT-H 2 x 1024)."""
    if any(k.startswith((UNCLIP_NOISE_AUGMENTOR, UNCLIP_EMBEDDER)) for k in shapes):
        return True
    return shapes[UNET + "label_emb.0.0.weight"][1] in (1536, 2048)


def _family(shapes: Shapes) -> tuple[str, tuple[TextEncoderLayout, ...]]:
    has_label = UNET + "label_emb.0.0.weight" in shapes
    clip_l = _text_encoder(shapes, SDXL_CLIP_L, "hf")
    clip_g = _text_encoder(shapes, SDXL_CLIP_G, "open_clip")
    if clip_l and clip_g and has_label:
        return "sdxl", (clip_l, clip_g)
    if any(k.startswith("conditioner.embedders.") for k in shapes):
        raise UnknownCheckpointError(
            "SDXL-style embedders found but not the SDXL base pair (HF CLIP-L at embedders.0, "
            "OpenCLIP at embedders.1, with label_emb); SDXL refiner and other variants are not "
            "supported. Found: " + describe(shapes)
        )
    sd2 = _text_encoder(shapes, SD2_CLIP, "open_clip")
    if sd2 and (not has_label or _is_unclip(shapes)):
        return "sd2", (sd2,)
    sd1 = _text_encoder(shapes, SD1_CLIP, "hf")
    if sd1 and not has_label:
        return "sd1", (sd1,)
    raise UnknownCheckpointError(
        "no supported text encoder layout found (SD1.x, SD2.x, SDXL). Found: " + describe(shapes)
    )


def detect(
    shapes: Shapes,
    metadata: Mapping[str, str] | None = None,
    prediction_type: str | None = None,
) -> CheckpointInfo:
    """Detect the family of a checkpoint from its key -> shape map and metadata.

    ``prediction_type`` overrides whatever the file says (``"epsilon"``/``"v_prediction"``,
    ``"eps"``/``"v"`` accepted). Raises ``UnknownCheckpointError`` naming the key prefixes
    and probe shapes found when the file is not a supported checkpoint.
    """
    metadata = metadata or {}
    conv_in = UNET + "input_blocks.0.0.weight"
    if conv_in not in shapes:
        hint = (
            " (it looks like a standalone VAE: use load_vae)"
            if any("decoder.conv_in" in k for k in shapes)
            else ""
        )
        raise UnknownCheckpointError(f"no UNet at {UNET}*{hint}. Found: " + describe(shapes))
    family, encoders = _family(shapes)
    context_dim = _context_dim(shapes)
    text_width = sum(e.width for e in encoders)
    if context_dim != text_width:
        raise UnknownCheckpointError(
            f"{family}-like keys, but the UNet cross-attention width {context_dim} does not match the "
            f"text encoder width {text_width}. Found: " + describe(shapes)
        )
    arch = arch_config_from_metadata(metadata)
    pred, source = _prediction(family, shapes, metadata, arch, prediction_type)
    config_name = "sd2_v" if family == "sd2" and pred == "v_prediction" else family
    adm_key = UNET + "label_emb.0.0.weight"
    return CheckpointInfo(
        family=family,
        config_name=config_name,
        prediction_type=pred,
        prediction_source=source,
        in_channels=int(shapes[conv_in][1]),
        context_dim=context_dim,
        adm_channels=int(shapes[adm_key][1]) if adm_key in shapes else 0,
        text_encoders=encoders,
        has_vae=any(k.startswith(VAE) for k in shapes),
        arch_config=arch,
    )


def detect_file(path: str | Path, prediction_type: str | None = None) -> CheckpointInfo:
    """Detect the family of a ``.safetensors`` checkpoint from its header alone."""
    shapes, metadata = read_header(path)
    return detect(shapes, metadata, prediction_type)
