"""Write diffusers/transformers models back as a single-file LDM-layout checkpoint.

The inverse of the loader, built from the same key maps (``keymap.scatter``): the tiny
test checkpoints are made with it, and a checkpoint-save node can use it. The file
layout follows the real releases: UNet under ``model.diffusion_model.``, VAE under
``first_stage_model.``, SD1 CLIP under ``cond_stage_model.transformer.text_model.`` (with
an int64 ``position_ids`` ``[1, 77]``), SD2 OpenCLIP under ``cond_stage_model.model.``, SDXL
under ``conditioner.embedders.0.transformer.`` / ``conditioner.embedders.1.model.``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

from nodes.models.build import TextEncoder
from nodes.models.detect import (
    CONFIG_METADATA_KEY,
    SD1_CLIP,
    SD2_CLIP,
    SDXL_CLIP_G,
    SDXL_CLIP_L,
    UNET,
    VAE,
)
from nodes.models.keymap import scatter, with_prefix
from nodes.models.keymap_clip import hf_clip_key_map, open_clip_key_map
from nodes.models.keymap_unet import unet_key_map
from nodes.models.keymap_vae import vae_key_map

ENCODER_SLOTS = {
    "sd1": ((SD1_CLIP + "text_model.", "hf"),),
    "sd2": ((SD2_CLIP, "open_clip"),),
    "sdxl": ((SDXL_CLIP_L + "text_model.", "hf"), (SDXL_CLIP_G, "open_clip")),
}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def ldm_state_dict(
    family: str,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL | None,
    text_encoders: Sequence[TextEncoder],
    *,
    replaced: Mapping[str, torch.Tensor] | None = None,
    replaced_encoders: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint in LDM layout (``family``: ``sd1``, ``sd2`` or ``sdxl``).

    ``replaced`` / ``replaced_encoders[i]``: tensors to write instead of the UNet's / the
    i-th text encoder's own, by their state-dict keys (e.g. weights with a LoRA merged in).
    """
    slots = ENCODER_SLOTS[family]
    if len(text_encoders) != len(slots):
        raise ValueError(f"{family} has {len(slots)} text encoders, got {len(text_encoders)}")
    out: dict[str, torch.Tensor] = {}
    unet_state = _state(unet) | dict(replaced or {})
    out.update(scatter(with_prefix(unet_key_map(unet_state, unet.config), UNET), unet_state))
    if vae is not None:
        vae_state = _state(vae)
        out.update(scatter(with_prefix(vae_key_map(vae_state, vae.config), VAE), vae_state))
    encoder_replacements = list(replaced_encoders or [None] * len(text_encoders))
    for (prefix, layout), encoder, extra in zip(slots, text_encoders, encoder_replacements, strict=True):
        state = _state(encoder) | dict(extra or {})
        key_map = hf_clip_key_map(state) if layout == "hf" else open_clip_key_map(state)
        out.update(scatter(with_prefix(key_map, prefix), state))
        if layout == "hf":
            n = encoder.config.max_position_embeddings
            out[prefix + "embeddings.position_ids"] = torch.arange(n, dtype=torch.int64)[None]
    return out


def arch_config(
    unet: UNet2DConditionModel,
    vae: AutoencoderKL | None,
    text_encoders: Sequence[TextEncoder],
    prediction_type: str | None = None,
) -> dict[str, Any]:
    """The ``latentgraph.config`` metadata object describing these models' architectures."""
    cfg: dict[str, Any] = {
        "unet": {k: v for k, v in dict(unet.config).items() if not k.startswith("_")},
        "text_encoders": [
            e.config.to_diff_dict() | {"architectures": [type(e).__name__]} for e in text_encoders
        ],
    }
    if vae is not None:
        cfg["vae"] = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    if prediction_type is not None:
        cfg["prediction_type"] = prediction_type
    return cfg


def save_ldm_checkpoint(
    path: str | Path,
    family: str,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL | None,
    text_encoders: Sequence[TextEncoder],
    *,
    metadata: Mapping[str, str] | None = None,
    store_arch_config: bool = False,
    prediction_type: str | None = None,
    replaced: Mapping[str, torch.Tensor] | None = None,
    replaced_encoders: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
) -> Path:
    """Save the models as one LDM-layout ``.safetensors`` file and return its path.

    ``store_arch_config`` writes the architecture (``arch_config``) into the metadata under
    ``latentgraph.config`` so non-standard sizes load back; ``prediction_type`` is stored there
    too. Extra string ``metadata`` is written as given. ``replaced``/``replaced_encoders``:
    as :func:`ldm_state_dict`.
    """
    meta = dict(metadata or {})
    if store_arch_config:
        meta[CONFIG_METADATA_KEY] = json.dumps(arch_config(unet, vae, text_encoders, prediction_type))
    path = Path(path)
    tensors = ldm_state_dict(family, unet, vae, text_encoders, replaced=replaced, replaced_encoders=replaced_encoders)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    return path
