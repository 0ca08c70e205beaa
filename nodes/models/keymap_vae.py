"""Key map: diffusers ``AutoencoderKL`` keys <- LDM ``AutoencoderKL`` (``first_stage_model``) keys.

LDM names encoder stages ``down.{i}.block.{j}`` and decoder stages ``up.{i}`` in *reverse*
order (``up.0`` is the last to run); diffusers runs ``up_blocks`` in order, so
``up_blocks.k`` is ``up.{n-1-k}``. The mid-block attention is four 1x1 convolutions in LDM
(``q``, ``k``, ``v``, ``proj_out``: ``[C, C, 1, 1]``) and linear layers in diffusers (``[C, C]``).
Source keys have no ``first_stage_model.`` prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from nodes.models.keymap import KeyMap, KeySource

_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_RESNET = re.compile(r"^(encoder|decoder)\.(down_blocks|up_blocks)\.(\d+)\.resnets\.(\d+)\.(.+)$")
_SAMPLER = re.compile(
    r"^(encoder|decoder)\.(down_blocks|up_blocks)\.(\d+)\.(downsamplers|upsamplers)\.0\.conv\.(.+)$"
)
_MID_RES = re.compile(r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)$")
_MID_ATTN = re.compile(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(.+)$")


def _resnet_rest(rest: str) -> str:
    return "nin_shortcut" + rest[len("conv_shortcut") :] if rest.startswith("conv_shortcut.") else rest


def vae_source(key: str, config: Mapping[str, Any]) -> KeySource:
    """Return the LDM source of diffusers VAE key ``key`` (``config``: the diffusers VAE config)."""
    n_up = len(config["up_block_types"])
    m = _RESNET.match(key)
    if m:
        part, side, block, idx, rest = m.groups()
        stage = f"down.{block}" if side == "down_blocks" else f"up.{n_up - 1 - int(block)}"
        return KeySource(f"{part}.{stage}.block.{idx}.{_resnet_rest(rest)}")
    m = _SAMPLER.match(key)
    if m:
        part, side, block, _, rest = m.groups()
        if side == "down_blocks":
            return KeySource(f"{part}.down.{block}.downsample.conv.{rest}")
        return KeySource(f"{part}.up.{n_up - 1 - int(block)}.upsample.conv.{rest}")
    m = _MID_RES.match(key)
    if m:
        part, idx, rest = m.groups()
        return KeySource(f"{part}.mid.block_{int(idx) + 1}.{_resnet_rest(rest)}")
    m = _MID_ATTN.match(key)
    if m:
        part, rest = m.groups()
        for name, ldm in _ATTN.items():
            if rest.startswith(name + "."):
                op = "copy" if name == "group_norm" else "conv1x1_to_linear"
                return KeySource(f"{part}.mid.attn_1.{ldm}{rest[len(name) :]}", op)
        raise KeyError(key)
    for name in ("encoder.conv_norm_out", "decoder.conv_norm_out"):
        if key.startswith(name + "."):
            return KeySource(name.replace("conv_norm_out", "norm_out") + key[len(name) :])
    if re.match(r"^(encoder\.conv_(in|out)|decoder\.conv_(in|out)|quant_conv|post_quant_conv)\.", key):
        return KeySource(key)
    raise KeyError(key)


def vae_key_map(target_keys: Iterable[str], config: Mapping[str, Any]) -> KeyMap:
    """Map every diffusers VAE key to its LDM source."""
    return {k: vae_source(k, config) for k in target_keys}
