"""Every name a patchable layer of our models may carry in a LoRA file.

Our UNet is a diffusers ``UNet2DConditionModel`` and our text encoders are transformers
CLIP models, but LoRA files name layers in several ways:

* UNet: diffusers names (``down_blocks.0.attentions.0.proj_in``) or the original LDM names
  (``input_blocks.1.1.proj_in``, kohya's SDXL files), dotted or with every ``.`` turned
  into ``_`` (kohya). The LDM name comes from ``nodes.models.keymap_unet``, the same map
  the checkpoint loader uses.
* Text encoders: transformers names with or without the ``text_model.`` level (transformers
  5 dropped it from ``CLIPTextModel``), dotted or underscored.

Only ``Linear`` and ``Conv2d`` layers are patchable; a LoRA naming another kind of layer
is reported as not matching.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from nodes.models.keymap_unet import ldm_unet_key

PATCHABLE = (torch.nn.Linear, torch.nn.Conv2d)


def _patchable(root: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in root.named_modules() if name and isinstance(module, PATCHABLE)}


def _add(aliases: dict[str, str], alias: str, name: str) -> None:
    aliases.setdefault(alias, name)
    aliases.setdefault(alias.replace(".", "_"), name)


def unet_aliases(unet: torch.nn.Module) -> dict[str, str]:
    """``{alias: module name}`` for every patchable UNet layer: diffusers and LDM names,
    dotted and underscored."""
    config: Mapping[str, Any] = unet.config
    aliases: dict[str, str] = {}
    for name in _patchable(unet):
        _add(aliases, name, name)
        try:
            ldm = ldm_unet_key(name + ".weight", config)
        except KeyError:
            continue
        _add(aliases, ldm.removesuffix(".weight"), name)
    return aliases


def encoder_aliases(encoder: torch.nn.Module) -> dict[str, str]:
    """``{alias: module name}`` for every patchable layer of a transformers CLIP text model."""
    aliases: dict[str, str] = {}
    for name in _patchable(encoder):
        bare = name.removeprefix("text_model.")
        _add(aliases, bare, name)
        _add(aliases, "text_model." + bare, name)
    return aliases
