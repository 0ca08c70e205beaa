"""What a ControlNet file is, from its key names and shapes alone (no tensor data read).

Two layouts of the same network (diffusers' ``ControlNetModel``) are read:

* **LDM** (the original ``cldm``): ``control_model.`` (or no prefix) + ``input_blocks.*``,
  ``middle_block.*``, ``zero_convs.N.0.*``, ``middle_block_out.0.*``,
  ``input_hint_block.N.*``, ``time_embed.*`` (and SDXL's ``label_emb.*``);
* **diffusers**: ``controlnet_cond_embedding.*``, ``down_blocks.*``, ``mid_block.*``,
  ``controlnet_down_blocks.N.*``, ``controlnet_mid_block.*``.

The family comes from the structure: a ``label_emb``/``add_embedding`` (pooled text and
size conditioning) is SDXL; otherwise linear transformer projections are SD2.x (its
OpenCLIP UNet's ``use_linear_in_transformer``) and 1x1-conv projections SD1.x.

The architecture, in order: the file's ``latentgraph.config`` metadata (its
``controlnet`` part, a diffusers ``ControlNetModel`` config), a diffusers ``config.json``
beside the file, else inferred: channels, blocks, layers, attention depth, projection,
cross-attention width and hint-encoder channels from the shapes, and what shapes cannot
show (attention heads, norm groups, SDXL's time-embedding width) from the family's bundled
UNet config (SD1: 8 heads; SD2/SDXL: 64 channels a head).

A union ControlNet (ControlNet++: ``task_embedding``, ``control_add_embedding.*``...) in
the diffusers layout, as published, is the same with diffusers ``ControlNetUnionModel``'s
extra parts (``nodes.controlnet.union``); ``ControlNetInfo.union`` says so and its config
has their sizes. A Control-LoRA (``lora_controlnet`` key) has no network of its own and is
not read here: ``nodes.controlnet.control_lora`` builds it from the sampled model. Files of
kinds we do not load (union ControlNets in the LDM layout, which ComfyUI does not load as
union either, ControlNets for SD3, Flux or other transformer models) are refused with an
error that names the kind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodes.controlnet.union import is_union, union_config
from nodes.models.detect import Shapes, arch_config_from_metadata
from nodes.models.errors import UnknownCheckpointError
from nodes.models.family_config import CONFIG_ROOT, bundled_configs

LDM_PREFIX = "control_model."
DIFFUSERS_MARK = "controlnet_cond_embedding.conv_in.weight"
DIFF_MARK = "difference"  # a "diff" ControlNet: its weights are added to a model's UNet's
CONTROL_LORA_MARK = "lora_controlnet"  # a Control-LoRA (nodes.controlnet.control_lora), as ComfyUI tells them

# Formats recognised only to be refused: a key that marks them -> what they are.
_REFUSED = (
    ("controlnet_blocks.0.weight", "a ControlNet for a transformer model (SD3, Flux, Qwen-Image...)"),
    ("controlnet_blocks.0.linear.weight", "a ControlNet for a transformer model (Flux)"),
    ("after_proj_list.0.weight", "a Hunyuan-DiT ControlNet"),
)
_HINT = re.compile(r"^input_hint_block\.(\d+)\.weight$")
_DIFF_HINT = re.compile(r"^controlnet_cond_embedding\.blocks\.(\d+)\.weight$")


@dataclass(frozen=True)
class ControlNetInfo:
    """What :func:`inspect_controlnet` found.

    ``layout``: ``"ldm"`` or ``"diffusers"``; ``prefix``: the key prefix of an LDM file
    (``control_model.`` or ``""``); ``family``: ``"sd1"``, ``"sd2"`` or ``"sdxl"``;
    ``config``: the diffusers ``ControlNetModel`` config; ``config_source``: where it came
    from; ``is_diff``: the file holds differences to a UNet's weights (DiffControlNetLoader);
    ``union``: a union ControlNet (``config`` is then a diffusers ``ControlNetUnionModel``'s).
    """

    layout: str
    prefix: str
    family: str
    config: dict[str, Any]
    config_source: str
    is_diff: bool = False
    union: bool = False


@dataclass(frozen=True)
class _Structure:
    """The shape facts both layouts share (see :func:`_ldm_structure`)."""

    in_channels: int
    channels: tuple[int, ...]  # each down block's output channels
    layers: int  # ResBlocks per down block
    depths: tuple[int, ...]  # transformer blocks in each down block's attentions (0: none)
    mid_depth: int
    linear: bool  # transformer projections are Linear (SD2/SDXL) rather than 1x1 convs (SD1)
    cross_dim: int
    hint_channels: int
    embedding_channels: tuple[int, ...]  # the hint encoder's channels (conditioning_embedding_out_channels)
    adm_in: int  # SDXL's label_emb input width, 0 without


def refused_kind(shapes: Shapes) -> str | None:
    """The description of a ControlNet kind we do not load, when ``shapes`` is one."""
    for key, what in _REFUSED:
        if key in shapes or any(k.endswith("." + key) for k in shapes):
            return what
    return None


def _count(shapes: Shapes, pattern: str) -> int:
    found = re.compile(pattern)
    return len({m.group(1) for k in shapes if (m := found.match(k))})


def _shape(shapes: Shapes, key: str, what: str) -> tuple[int, ...]:
    if key not in shapes:
        raise UnknownCheckpointError(f"ControlNet: expected tensor {key!r} ({what}) is missing")
    return tuple(shapes[key])


def _transformer(shapes: Shapes, prefix: str) -> tuple[int, bool | None, int]:
    """The transformer at ``prefix`` (a block's attention): its depth (0: none), whether its
    ``proj_in`` is linear (SD2/SDXL) rather than a 1x1 conv, and its cross-attention width."""
    depth = _count(shapes, rf"^{re.escape(prefix)}\.transformer_blocks\.(\d+)\.")
    if not depth:
        return 0, None, 0
    return (depth, len(shapes[f"{prefix}.proj_in.weight"]) == 2,
            int(shapes[f"{prefix}.transformer_blocks.0.attn2.to_k.weight"][1]))


def _attention_facts(shapes: Shapes, blocks: list[str], middle: str) -> tuple[list[int], int, bool, int]:
    """Each block's transformer depth, the middle block's, and (from the deepest block with
    a transformer, else the middle one) whether ``proj_in`` is linear and the cross-attention width."""
    found = [_transformer(shapes, prefix) for prefix in blocks]
    mid_depth, *mid_facts = _transformer(shapes, middle)
    linear, cross = next(((lin, width) for depth, lin, width in reversed(found) if depth), tuple(mid_facts))
    return [depth for depth, _, _ in found], mid_depth, bool(linear), int(cross)


def _ldm_structure(shapes: Shapes) -> _Structure:
    """Reads an LDM ControlNet's structure (keys without prefix).

    ``input_blocks.0`` is conv_in; then each down block has ``layers`` entries and, but
    the last, a downsampler entry (``.0.op``), so the downsamplers' positions give
    ``layers`` and the number of blocks.
    """
    conv_in = _shape(shapes, "input_blocks.0.0.weight", "the input convolution")
    indices = sorted({int(k.split(".")[1]) for k in shapes if k.startswith("input_blocks.")})
    ops = sorted({int(k.split(".")[1]) for k in shapes if re.match(r"^input_blocks\.\d+\.0\.op\.weight$", k)})
    blocks = len(ops) + 1
    if (indices[-1] + 1) % blocks:
        raise UnknownCheckpointError(f"ControlNet: {indices[-1] + 1} input blocks do not split into {blocks} levels")
    layers = (indices[-1] + 1) // blocks - 1
    firsts = [1 + block * (layers + 1) for block in range(blocks)]
    channels = [_shape(shapes, f"input_blocks.{i}.0.out_layers.3.weight", "a ResBlock")[0] for i in firsts]
    depths, mid_depth, linear, cross = _attention_facts(shapes, [f"input_blocks.{i}.1" for i in firsts],
                                                        "middle_block.1")
    hint_channels, embedding = ldm_hint_encoder(shapes)
    adm = shapes.get("label_emb.0.0.weight")
    return _Structure(int(conv_in[1]), tuple(channels), layers, tuple(depths), mid_depth, bool(linear), int(cross),
                      hint_channels, embedding, int(adm[1]) if adm else 0)


def ldm_hint_encoder(shapes: Shapes) -> tuple[int, tuple[int, ...]]:
    """An LDM hint encoder's (``input_hint_block.*``, keys without prefix) input channels
    and its convolutions' widths (diffusers' ``conditioning_embedding_out_channels``)."""
    hint = sorted(int(m.group(1)) for k in shapes if (m := _HINT.match(k)))
    if not hint:
        raise UnknownCheckpointError("ControlNet: no hint encoder (input_hint_block.*) found")
    # convs at 0, 2, 4, ...: conv_in, then (same-width, stride-2 widening) pairs, then the zero conv
    pairs = (len(hint) - 2) // 2
    embedding = [shapes[f"input_hint_block.{hint[0]}.weight"][0]]
    embedding += [shapes[f"input_hint_block.{hint[2 + 2 * i]}.weight"][0] for i in range(pairs)]
    return int(shapes[f"input_hint_block.{hint[0]}.weight"][1]), tuple(int(c) for c in embedding)


def _diffusers_structure(shapes: Shapes) -> _Structure:
    """Reads a diffusers-layout ControlNet's structure."""
    conv_in = _shape(shapes, "conv_in.weight", "the input convolution")
    blocks = _count(shapes, r"^down_blocks\.(\d+)\.")
    layers = _count(shapes, r"^down_blocks\.0\.resnets\.(\d+)\.")
    channels = [_shape(shapes, f"down_blocks.{block}.resnets.0.conv2.weight", "a ResBlock")[0]
                for block in range(blocks)]
    depths, mid_depth, linear, cross = _attention_facts(
        shapes, [f"down_blocks.{block}.attentions.0" for block in range(blocks)], "mid_block.attentions.0")
    first = shapes[DIFFUSERS_MARK]
    inner = sorted(int(m.group(1)) for k in shapes if (m := _DIFF_HINT.match(k)))
    embedding = [first[0]] + [shapes[f"controlnet_cond_embedding.blocks.{i}.weight"][0] for i in inner if i % 2]
    adm = shapes.get("add_embedding.linear_1.weight")
    return _Structure(int(conv_in[1]), tuple(channels), layers, tuple(depths), mid_depth, bool(linear), int(cross),
                      int(first[1]), tuple(int(c) for c in embedding), int(adm[1]) if adm else 0)


def _family(structure: _Structure) -> str:
    if structure.adm_in:
        return "sdxl"
    return "sd2" if structure.linear else "sd1"


def _heads(family: str, base: Mapping[str, Any], channels: tuple[int, ...]) -> int | list[int]:
    """Attention heads (diffusers' ``attention_head_dim``, which counts heads): the family
    config's when its blocks match, else SD1's 8 heads or SD2/SDXL's 64 channels a head."""
    if list(base.get("block_out_channels", ())) == list(channels):
        return base["attention_head_dim"]
    return 8 if family == "sd1" else [max(1, c // 64) for c in channels]


def _inferred_config(structure: _Structure, family: str, config_root: Path) -> dict[str, Any]:
    base = bundled_configs("sd2" if family == "sd2" else family, config_root).unet
    depths = [d if d else 1 for d in structure.depths]
    if structure.mid_depth:
        # diffusers' ControlNetModel gives the mid block the last down block's depth
        if structure.depths[-1] and structure.depths[-1] != structure.mid_depth:
            raise UnknownCheckpointError(
                f"ControlNet: the middle block has {structure.mid_depth} transformer layers but the last down block "
                f"{structure.depths[-1]}; diffusers' ControlNetModel cannot hold that")
        depths[-1] = structure.mid_depth
    config: dict[str, Any] = {
        "in_channels": structure.in_channels,
        "conditioning_channels": structure.hint_channels,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in structure.depths],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if structure.mid_depth else None,
        "block_out_channels": list(structure.channels),
        "layers_per_block": structure.layers,
        "cross_attention_dim": structure.cross_dim,
        "transformer_layers_per_block": depths,
        "attention_head_dim": _heads(family, base, structure.channels),
        "use_linear_projection": structure.linear,
        "conditioning_embedding_out_channels": list(structure.embedding_channels),
    }
    for key in ("norm_num_groups", "norm_eps", "act_fn", "flip_sin_to_cos", "freq_shift", "downsample_padding",
                "mid_block_scale_factor", "upcast_attention"):
        if key in base:
            config[key] = base[key]
    if structure.adm_in:
        config.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=structure.adm_in,
                      addition_time_embed_dim=base.get("addition_time_embed_dim", 256),
                      addition_embed_type_num_heads=base.get("addition_embed_type_num_heads", 64))
    return config


def _strip(shapes: Shapes, prefix: str) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix):]: tuple(v) for k, v in shapes.items() if k.startswith(prefix)}


def inspect_controlnet(shapes: Shapes, metadata: Mapping[str, str] | None = None,
                       folder_config: Mapping[str, Any] | None = None, name: str = "the file",
                       config_root: Path = CONFIG_ROOT) -> ControlNetInfo:
    """Classifies a ControlNet file from its key -> shape map (see the module docstring).

    ``folder_config``: a diffusers ``config.json`` found beside the file (``ControlNetModel``).
    Raises ``UnknownCheckpointError`` naming what the file is when it is not a ControlNet we
    load (a checkpoint, a T2I-Adapter, a refused kind).
    """
    if CONTROL_LORA_MARK in shapes:  # not a refusal: load_controlnet reads these itself
        raise UnknownCheckpointError(f"{name} is a Control-LoRA, which has no network of its own: load it with "
                                     f"load_controlnet (ControlNetLoader), which builds one from the sampled model")
    refused = refused_kind(shapes)
    if refused is not None:
        raise UnknownCheckpointError(f"{name} is {refused}, which is not supported")
    union = is_union(shapes)
    if union and DIFFUSERS_MARK not in shapes:
        raise UnknownCheckpointError(f"{name} is a union ControlNet in the LDM layout, which is not supported "
                                     f"(union ControlNets load in diffusers' layout, as published)")
    if DIFFUSERS_MARK in shapes:
        layout, prefix, structure = "diffusers", "", _diffusers_structure(shapes)
    elif LDM_PREFIX + "zero_convs.0.0.weight" in shapes:
        layout, prefix = "ldm", LDM_PREFIX
        structure = _ldm_structure(_strip(shapes, LDM_PREFIX))
    elif "zero_convs.0.0.weight" in shapes:
        layout, prefix, structure = "ldm", "", _ldm_structure(shapes)
    else:
        what = "a whole checkpoint" if any(k.startswith("model.diffusion_model.") for k in shapes) else \
            "no ControlNet (no zero_convs / controlnet_cond_embedding keys)"
        raise UnknownCheckpointError(f"{name} is {what}; expected a ControlNet (LDM or diffusers layout)")
    family = _family(structure)
    arch = arch_config_from_metadata(metadata or {}) or {}
    if isinstance(arch.get("controlnet"), dict):
        config, source = dict(arch["controlnet"]), "metadata config"
    elif folder_config is not None:
        config, source = {k: v for k, v in folder_config.items() if not k.startswith("_")}, "config.json"
    else:
        config, source = _inferred_config(structure, family, config_root), "inferred from the structure"
    if union:  # the shapes say the union parts' sizes, whatever config came with the file
        config = _with_union(config, union_config(shapes, name), name, given=source != "inferred from the structure")
    return ControlNetInfo(layout, prefix, family, config, source, is_diff=DIFF_MARK in shapes, union=union)


def _with_union(config: dict[str, Any], extra: dict[str, Any], name: str, given: bool) -> dict[str, Any]:
    """A plain ControlNet config with a union's parts. diffusers' ``ControlNetUnionModel``
    has one ``addition_time_embed_dim`` for SDXL's size embedding and the control types'
    embedding: a ``given`` config (the file's or its folder's) must agree with the shapes;
    an inferred one took its value from the family's config and yields to the shapes."""
    own = config.get("addition_time_embed_dim")
    if given and own is not None and own != extra["addition_time_embed_dim"]:
        raise UnknownCheckpointError(
            f"{name}: the union ControlNet embeds its control types in {extra['addition_time_embed_dim']} channels "
            f"but its size conditioning in {own}; diffusers' ControlNetUnionModel cannot hold that")
    if "num_trans_head" in config:  # not in the shapes: a config that says it is right
        extra = {**extra, "num_trans_head": config["num_trans_head"]}
    return {**config, **extra}
