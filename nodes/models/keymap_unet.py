"""Key map: diffusers ``UNet2DConditionModel`` keys <- LDM ``openaimodel.UNetModel`` keys.

LDM numbers its blocks flat: ``input_blocks.0`` is ``conv_in``; each down block then owns
``layers_per_block`` entries (``.0`` ResBlock, ``.1`` SpatialTransformer when the block has
cross-attention) plus one downsampler entry (``.0.op``) unless it is the last block.
``output_blocks`` own ``layers_per_block + 1`` entries each, the upsampler sitting after the
attention of the last entry. Transformer internals (``transformer_blocks.N.attn1.to_q``...)
have the same names in both layouts. Source keys here have no ``model.diffusion_model.``
prefix; the loader adds it with ``keymap.with_prefix``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from nodes.models.keymap import KeyMap, KeySource

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",  # SD2.1-unCLIP: class_embed_type "projection"
    "class_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_BLOCK = re.compile(
    r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)$"
)
_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    if head not in _RESNET:
        raise KeyError(rest)
    return f"{_RESNET[head]}.{tail}"


def ldm_unet_key(key: str, config: Mapping[str, Any]) -> str:
    """Return the LDM key (without prefix) holding diffusers UNet key ``key``.

    ``config`` is the diffusers UNet config (``layers_per_block`` must be an int,
    ``up_block_types`` says which up blocks have attention). Raises ``KeyError`` for a key
    with no LDM counterpart.
    """
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise KeyError(f"per-block layers_per_block is not supported: {layers!r}")
    for name, ldm in _TOP.items():
        if key.startswith(name + "."):
            return ldm + key[len(name) :]
    m = _MID.match(key)
    if m:
        kind, idx, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{0 if idx == 0 else 2}.{_resnet(rest)}"
    m = _BLOCK.match(key)
    if not m:
        raise KeyError(key)
    side, block, kind, idx, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
    if side == "down_blocks":
        base = 1 + block * (layers + 1)
        if kind == "resnets":
            return f"input_blocks.{base + idx}.0.{_resnet(rest)}"
        if kind == "attentions":
            return f"input_blocks.{base + idx}.1.{rest}"
        if kind == "downsamplers" and rest.startswith("conv."):
            return f"input_blocks.{base + layers}.0.op.{rest[len('conv.') :]}"
        raise KeyError(key)
    base = block * (layers + 1)
    if kind == "resnets":
        return f"output_blocks.{base + idx}.0.{_resnet(rest)}"
    if kind == "attentions":
        return f"output_blocks.{base + idx}.1.{rest}"
    if kind == "upsamplers" and rest.startswith("conv."):
        has_attention = "CrossAttn" in config["up_block_types"][block]
        return f"output_blocks.{base + layers}.{2 if has_attention else 1}.{rest}"
    raise KeyError(key)


def unet_key_map(target_keys: Iterable[str], config: Mapping[str, Any]) -> KeyMap:
    """Map every diffusers UNet key to its LDM source (plain copies, no reshapes needed)."""
    return {k: KeySource(ldm_unet_key(k, config)) for k in target_keys}
