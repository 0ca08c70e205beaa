"""Build models with no weights (meta device) and fill them from a state dict.

Building on the ``meta`` device allocates nothing and runs no random init; the weights
read from the file are then assigned in place (``load_state_dict(assign=True)``), so each
tensor is allocated once, already in its target dtype and on its target device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from nodes.models import cast_weights
from nodes.models.errors import ModelLoadError

TextEncoder = CLIPTextModel | CLIPTextModelWithProjection


def empty_unet(config: Mapping[str, Any]) -> UNet2DConditionModel:
    """A ``UNet2DConditionModel`` with meta tensors, from a diffusers config dict."""
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(dict(config))


def empty_vae(config: Mapping[str, Any]) -> AutoencoderKL:
    """An ``AutoencoderKL`` with meta tensors, from a diffusers config dict."""
    with torch.device("meta"):
        return AutoencoderKL.from_config(dict(config))


def text_encoder_has_projection(config: Mapping[str, Any]) -> bool:
    """True when the config asks for ``CLIPTextModelWithProjection`` (SDXL's second encoder)."""
    return "CLIPTextModelWithProjection" in (config.get("architectures") or [])


def empty_text_encoder(config: Mapping[str, Any]) -> TextEncoder:
    """A CLIP text model with meta tensors; with projection when the config's architectures say so."""
    cfg = CLIPTextConfig(**{k: v for k, v in config.items() if not k.startswith("_")})
    cls = CLIPTextModelWithProjection if text_encoder_has_projection(config) else CLIPTextModel
    with torch.device("meta"):
        return cls(cfg)


def _materialize_buffers(model: torch.nn.Module, device: torch.device) -> None:
    """Recreate non-persistent buffers left on meta (CLIP's ``position_ids`` ``[1, N]`` int64)."""
    for module_name, module in model.named_modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if not buf.is_meta:
                continue
            if name != "position_ids":
                raise ModelLoadError(f"buffer {module_name}.{name} was not loaded and cannot be rebuilt")
            ids = torch.arange(buf.shape[-1], dtype=torch.long, device=device).expand(1, -1)
            module.register_buffer(name, ids, persistent=False)


def fill(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], device: torch.device | str, dtype: torch.dtype
) -> torch.nn.Module:
    """Assign ``state`` into a meta-built ``model`` (all keys required), ready for inference.

    ``dtype`` is the dtype the model computes in: weights ``state`` holds in a narrower
    dtype stay so and are cast per layer (``cast_weights.install``); any other floating
    tensor not in ``dtype`` is converted. Returns the model in eval mode with gradients off.
    Raises ``ModelLoadError`` listing missing or unexpected keys, or shape mismatches.
    """
    try:
        result = model.load_state_dict(dict(state), strict=False, assign=True)
    except RuntimeError as exc:  # shape mismatch
        raise ModelLoadError(f"{type(model).__name__}: {exc}") from exc
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} keys, e.g. {result.missing_keys[:3]}")
    if result.unexpected_keys:
        problems.append(f"unexpected {len(result.unexpected_keys)} keys, e.g. {result.unexpected_keys[:3]}")
    if problems:
        raise ModelLoadError(f"{type(model).__name__}: " + "; ".join(problems))
    _materialize_buffers(model, torch.device(device))
    cast_weights.install(model, dtype)
    return model.eval().requires_grad_(False)
