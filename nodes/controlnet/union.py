"""Union ControlNets (ControlNet++, e.g. xinsir's controlnet-union-sdxl-1.0 and its
"promax" variant): one SDXL ControlNet for several control types.

**The file.** As published, a union ControlNet is a diffusers-layout ControlNet with
extra parts, the state dict of diffusers' ``ControlNetUnionModel``: ``task_embedding``
[types, width] (one vector per control type), ``transformer_layes.N.*`` (residual
attention blocks over those vectors), ``spatial_ch_projs.*`` (back to the hint encoder's
width) and ``control_add_embedding.linear_1/2.*`` (the chosen types, as sinusoidal
embeddings, added to the time embedding). ComfyUI recognises one by
``control_add_embedding.linear_1.bias`` in a diffusers-layout file and reads the number
of types from ``task_embedding``; it has no LDM-layout union loader, and neither do we.

**The forward pass** follows ComfyUI's ``cldm.ControlNet`` (``control_type`` set by
SetUnionControlNetType, an empty list when the type is "auto" or never set):

* the time embedding gets ``control_add_embedding`` of the types' flags (1.0 for the
  chosen type, 0.0 for the rest; all zeros for "auto", which still adds a learned vector);
* with a type: the hint encoder's output ``c`` [N, C, H, W] is averaged over the image,
  ``task_embedding[type]`` added, and the result run, one token per row, through the
  attention blocks and ``spatial_ch_projs``, whose output is added to ``c`` at every
  pixel; with "auto" ``c`` is used as it is (a plain ControlNet's hint path);
* ``c`` is added to ``conv_in``'s output and the rest is a ControlNet's.

diffusers' own ``ControlNetUnionModel.forward`` gives the same for one batch row (it also
feeds the image's mean as a second token, but its attention runs over the batch axis, so
for one row each token attends to itself alone); for several rows its attention mixes the
rows, which ComfyUI's does not. We compute each row on its own, as ComfyUI, so the cond
and uncond halves of a CFG batch do not see each other. diffusers has no "auto".
"""

from __future__ import annotations

import re
from typing import Any

import torch

from nodes.controlnet.union_types import UNION_TYPE_NAMES
from nodes.models.detect import Shapes
from nodes.models.errors import UnknownCheckpointError

UNION_MARK = "control_add_embedding.linear_1.bias"  # ComfyUI's test for a union file
UNION_HEADS = 8  # the attention blocks' heads: not in the shapes; 8 in ComfyUI and diffusers


def is_union(shapes: Shapes) -> bool:
    """Whether a file's keys (any prefix) are a union ControlNet's."""
    return any(k == UNION_MARK or k.endswith("." + UNION_MARK) or k == "task_embedding"
               or k.endswith(".task_embedding") for k in shapes)


def type_name(index: int) -> str:
    return UNION_TYPE_NAMES[index] if 0 <= index < len(UNION_TYPE_NAMES) else str(index)


def union_config(shapes: Shapes, name: str = "the file") -> dict[str, Any]:
    """The diffusers ``ControlNetUnionModel`` arguments a plain ControlNet config lacks,
    from a diffusers-layout union file's shapes: ``num_control_type``,
    ``num_trans_channel``, ``num_trans_layer``, ``num_proj_channel``, ``num_trans_head``
    and ``addition_time_embed_dim`` (the width of one type's sinusoidal embedding)."""
    for key in ("task_embedding", UNION_MARK, "control_add_embedding.linear_1.weight", "spatial_ch_projs.weight"):
        if key not in shapes:
            raise UnknownCheckpointError(f"{name}: a union ControlNet without tensor {key!r}")
    types, width = (int(n) for n in shapes["task_embedding"])
    layers = len({m.group(1) for k in shapes if (m := re.match(r"^transformer_layes\.(\d+)\.", k))})
    embed_in = int(shapes["control_add_embedding.linear_1.weight"][1])
    if embed_in % types:
        raise UnknownCheckpointError(f"{name}: control_add_embedding takes {embed_in} features, not a multiple of "
                                     f"its {types} control types")
    if width % UNION_HEADS:
        raise UnknownCheckpointError(f"{name}: a union ControlNet of width {width} cannot have {UNION_HEADS} "
                                     f"attention heads")
    return {"num_control_type": types, "num_trans_channel": width, "num_trans_layer": layers,
            "num_proj_channel": int(shapes["spatial_ch_projs.weight"][0]), "num_trans_head": UNION_HEADS,
            "addition_time_embed_dim": embed_in // types}


def check_type(model: Any, control_type: int | None, name: str) -> None:
    """A clear error when ``control_type`` is beyond the types ``model`` was trained for
    (ComfyUI's message points to the promax file, which has all eight)."""
    count = int(model.config.num_control_type)
    if control_type is not None and not 0 <= control_type < count:
        raise ValueError(f"the union ControlNet {name} has {count} control types; "
                         f"{type_name(control_type)!r} (type {control_type}) is not one of them "
                         f"(controlnet-union-sdxl-1.0 has 6, its promax variant all 8)")


def _time_embedding(model: Any, sample: torch.Tensor, timestep: torch.Tensor, control_type: int | None,
                    added: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """The time embedding [N, 4 x width] with the control types' and (SDXL) the pooled text
    and size embeddings added, in diffusers' order."""
    n = sample.shape[0]
    emb = model.time_embedding(model.time_proj(timestep.expand(n)).to(sample.dtype))
    aug = None
    if model.config.addition_embed_type == "text_time":
        if not added:
            raise ValueError("an SDXL union ControlNet needs the pooled text and size conditioning")
        time_embeds = model.add_time_proj(added["time_ids"].flatten()).reshape(n, -1)
        aug = model.add_embedding(torch.cat([added["text_embeds"], time_embeds], dim=-1).to(emb.dtype))
    elif model.config.addition_embed_type is not None:
        raise ValueError(f"a union ControlNet with addition_embed_type {model.config.addition_embed_type!r} "
                         f"is not supported")
    flags = torch.zeros(n, int(model.config.num_control_type), device=sample.device)
    if control_type is not None:
        flags[:, control_type] = 1.0
    types = model.control_type_proj(flags.flatten()).reshape(n, -1).to(emb.dtype)
    emb = emb + model.control_add_embedding(types)
    return emb + aug if aug is not None else emb


def _guided_hint(model: Any, hint: torch.Tensor, control_type: int | None) -> torch.Tensor:
    """The hint's features [N, C, H/8, W/8], fused with the type's embedding when one is set."""
    features = model.controlnet_cond_embedding(hint)
    if control_type is None:
        return features
    tokens = features.mean(dim=(2, 3)) + model.task_embedding[control_type].to(features.dtype)
    # [1, N, C]: nn.MultiheadAttention reads (sequence, batch, width), so each row is a
    # sequence of one token and attends to itself alone (ComfyUI's one-token attention)
    tokens = tokens.unsqueeze(0)
    for layer in model.transformer_layes:
        tokens = layer(tokens)
    alpha = model.spatial_ch_projs(tokens[0])
    return features + alpha[:, :, None, None]


def union_residuals(model: Any, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                    hint: torch.Tensor, control_type: int | None, scale: float,
                    added: dict[str, torch.Tensor] | None = None) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """A diffusers ``ControlNetUnionModel``'s residuals, as ComfyUI computes them.

    ``sample`` [N, 4, h, w], ``timestep`` [N] (the UNet's), ``context`` [N, T, D], ``hint``
    [N, 3, 8h, 8w] 0..1, ``control_type`` a ``union_types.UNION_TYPES`` index or None ("auto"),
    ``scale`` the strength, ``added`` SDXL's ``text_embeds`` [N, P] and ``time_ids`` [N, 6].
    Returns (the down residuals, one per skip connection; the middle block's), times ``scale``.
    """
    emb = _time_embedding(model, sample, timestep, control_type, added)
    h = model.conv_in(sample) + _guided_hint(model, hint, control_type)
    skips = (h,)
    for block in model.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=context)
        else:
            h, res = block(hidden_states=h, temb=emb)
        skips += res
    h = model.mid_block(h, emb, encoder_hidden_states=context)
    down = tuple(conv(skip) * scale for skip, conv in zip(skips, model.controlnet_down_blocks, strict=True))
    mid = model.controlnet_mid_block(h) * scale
    if model.config.global_pool_conditions:
        down = tuple(r.mean(dim=(2, 3), keepdim=True) for r in down)
        mid = mid.mean(dim=(2, 3), keepdim=True)
    return down, mid
