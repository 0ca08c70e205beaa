"""Key map: diffusers ``ControlNetModel`` keys <- LDM ControlNet (``cldm``) keys.

A ControlNet is a copy of the UNet's encoder half, so everything but its own parts maps as
the UNet does (``nodes.models.keymap_unet.ldm_unet_key``: ``conv_in``, ``time_embedding``,
``add_embedding``, ``down_blocks``, ``mid_block``). Its own parts:

* ``controlnet_down_blocks.N`` <- ``zero_convs.N.0`` (one zero conv per skip connection);
* ``controlnet_mid_block`` <- ``middle_block_out.0``;
* the hint encoder ``controlnet_cond_embedding``: LDM's ``input_hint_block`` is a
  Sequential of convs with a SiLU after each but the last, so the convs sit at even
  indices: ``conv_in`` <- ``.0``, ``blocks.J`` <- ``.{2 + 2J}``, ``conv_out`` <- the last.

Source keys here have no ``control_model.`` prefix; add it with ``keymap.with_prefix``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nodes.models.keymap import KeyMap, KeySource
from nodes.models.keymap_unet import ldm_unet_key


def ldm_controlnet_key(key: str, config: Mapping[str, Any]) -> str:
    """The LDM key (without prefix) holding diffusers ``ControlNetModel`` key ``key``.

    ``config`` is the ControlNet's diffusers config (``layers_per_block``,
    ``conditioning_embedding_out_channels``). Raises ``KeyError`` for a key with no LDM
    counterpart.
    """
    head, _, rest = key.partition(".")
    if head == "controlnet_down_blocks":
        index, _, tail = rest.partition(".")
        return f"zero_convs.{index}.0.{tail}"
    if head == "controlnet_mid_block":
        return f"middle_block_out.0.{rest}"
    if head == "controlnet_cond_embedding":
        part, _, tail = rest.partition(".")
        if part == "conv_in":
            return f"input_hint_block.0.{tail}"
        blocks = 2 * (len(config.get("conditioning_embedding_out_channels") or (16, 32, 96, 256)) - 1)
        if part == "conv_out":
            return f"input_hint_block.{2 + 2 * blocks}.{tail}"
        if part == "blocks":
            index, _, tail = tail.partition(".")
            return f"input_hint_block.{2 + 2 * int(index)}.{tail}"
        raise KeyError(key)
    return ldm_unet_key(key, config)


def controlnet_key_map(target_keys: Iterable[str], config: Mapping[str, Any]) -> KeyMap:
    """Maps every diffusers ``ControlNetModel`` key to its LDM source (plain copies)."""
    return {k: KeySource(ldm_controlnet_key(k, config)) for k in target_keys}
