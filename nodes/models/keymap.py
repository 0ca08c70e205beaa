"""Generic key maps between a model's own state dict and a checkpoint's layout.

A key map says, for every key of the target model (diffusers / transformers naming), where
its tensor lives in the source checkpoint (LDM / OpenCLIP naming) and how to reshape it.
The same map serves both directions: ``gather`` builds the model's state dict from a
checkpoint (loading), ``scatter`` builds checkpoint tensors from a model's state dict
(saving, test fixtures). Family-specific modules (``keymap_unet``, ``keymap_vae``,
``keymap_clip``) only produce maps; they never touch tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch

Op = Literal["copy", "conv1x1_to_linear", "chunk3", "transpose"]


@dataclass(frozen=True)
class KeySource:
    """Where one target tensor comes from.

    ``key`` is the full source key. ``op`` transforms the source tensor into the target:
    ``copy`` (as is), ``conv1x1_to_linear`` (``[O, I, 1, 1]`` -> ``[O, I]``), ``chunk3``
    (part ``part`` of three equal chunks along dim 0, e.g. a fused q/k/v projection) and
    ``transpose`` (2-D ``[A, B]`` -> ``[B, A]``).
    """

    key: str
    op: Op = "copy"
    part: int = 0


KeyMap = dict[str, KeySource]


def gather(
    key_map: Mapping[str, KeySource],
    read: Callable[[str], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Build a target state dict: for each target key, read its source tensor and transform it.

    ``read(source_key)`` returns the source tensor (e.g. from a memory-mapped safetensors
    file, already on the target device and dtype). Fused tensors are read once per part,
    which for ``chunk3`` returns views of the same storage.
    """
    out: dict[str, torch.Tensor] = {}
    for target, src in key_map.items():
        tensor = read(src.key)
        if src.op == "copy":
            out[target] = tensor
        elif src.op == "conv1x1_to_linear":
            out[target] = tensor.reshape(tensor.shape[0], tensor.shape[1]) if tensor.dim() == 4 else tensor
        elif src.op == "chunk3":
            out[target] = tensor.chunk(3, dim=0)[src.part]
        elif src.op == "transpose":
            out[target] = tensor.t().contiguous()
        else:  # pragma: no cover - Op is closed
            raise ValueError(f"unknown op {src.op!r}")
    return out


def scatter(key_map: Mapping[str, KeySource], state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of ``gather``: turn a target state dict back into source-layout tensors.

    ``chunk3`` parts are concatenated in part order; ``conv1x1_to_linear`` weights regain
    their trailing ``[1, 1]``. Every tensor is made contiguous (safetensors requires it).
    """
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[int, torch.Tensor]] = {}
    for target, src in key_map.items():
        tensor = state[target]
        if src.op == "copy":
            out[src.key] = tensor.contiguous()
        elif src.op == "conv1x1_to_linear":
            out[src.key] = tensor[:, :, None, None].contiguous() if tensor.dim() == 2 else tensor.contiguous()
        elif src.op == "chunk3":
            fused.setdefault(src.key, {})[src.part] = tensor
        elif src.op == "transpose":
            out[src.key] = tensor.t().contiguous()
    for key, parts in fused.items():
        if sorted(parts) != [0, 1, 2]:
            raise ValueError(f"fused tensor {key} is missing parts: has {sorted(parts)}")
        out[key] = torch.cat([parts[0], parts[1], parts[2]], dim=0).contiguous()
    return out


def with_prefix(key_map: Mapping[str, KeySource], prefix: str) -> KeyMap:
    """Return ``key_map`` with ``prefix`` prepended to every source key."""
    return {t: KeySource(prefix + s.key, s.op, s.part) for t, s in key_map.items()}
