"""LoRA layers computed on the fly, and views of a module tree with some layers wrapped.

``patched_view(root, deltas)`` returns a module that behaves like ``root`` with the named
layers replaced by ``LoraAdapter`` wrappers, without changing ``root``: every module of
the tree is a shallow copy with its own tables (children, parameters, buffers, hooks),
while every parameter and buffer tensor is the base model's own.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LoraDelta:
    """One LoRA's low-rank update of one layer: ``W += scale * up @ (mid) @ down``.

    Linear layer: ``down`` [r, in], ``up`` [out, r]. Conv2d layer: ``down`` [r, in, kh, kw]
    (the layer's kernel; 1x1 with ``mid``), ``mid`` None or [r, r, kh, kw] (Tucker LoCon),
    ``up`` [out, r, 1, 1]. ``scale`` = strength * alpha / rank.
    """

    down: torch.Tensor
    up: torch.Tensor
    scale: float
    mid: torch.Tensor | None = None

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.down, self.up, self.mid) if t is not None)

    def weight_delta(self, shape: torch.Size) -> torch.Tensor:
        """The full ``[out, in, ...]`` weight change (for merging by hand, tests, checks)."""
        up, down = self.up.flatten(1).float(), self.down.float()
        if self.mid is not None:  # [r, r, k, k] on a 1x1 down: compose into the kernel
            down = torch.einsum("ijkl,jm->imkl", self.mid.float(), down.flatten(1))
        return (up @ down.flatten(1)).reshape(shape) * self.scale


class LoraAdapter(torch.nn.Module):
    """``base(x) + sum(scale * up(mid(down(x))))`` for a ``Linear`` or ``Conv2d`` ``base``.

    ``base`` is the original layer (shared, never modified). The LoRA tensors are buffers
    (moved with the module, left out of ``state_dict``). ``weight`` and ``bias`` read
    through to ``base``, for code that inspects a layer's dtype or shape.
    """

    def __init__(self, base: torch.nn.Module, deltas: Sequence[LoraDelta]) -> None:
        super().__init__()
        self.base = base
        self.scales = [float(d.scale) for d in deltas]
        self.count = len(deltas)
        for i, d in enumerate(deltas):
            self.register_buffer(f"down{i}", d.down, persistent=False)
            self.register_buffer(f"up{i}", d.up, persistent=False)
            self.register_buffer(f"mid{i}", d.mid, persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def _delta(self, x: torch.Tensor, i: int) -> torch.Tensor:
        down, up, mid = getattr(self, f"down{i}"), getattr(self, f"up{i}"), getattr(self, f"mid{i}")
        down, up = down.to(x.dtype), up.to(x.dtype)
        if isinstance(self.base, torch.nn.Linear):
            return F.linear(F.linear(x, down.flatten(1)), up.flatten(1))
        conv = self.base
        if down.dim() == 2:  # a 1x1 conv LoRA stored as a linear one
            down = down[:, :, None, None]
        up = up if up.dim() == 4 else up[:, :, None, None]
        if mid is None:
            h = F.conv2d(x, down, stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
        else:
            h = F.conv2d(x, down)
            h = F.conv2d(h, mid.to(x.dtype), stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
        return F.conv2d(h, up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        for i, scale in enumerate(self.scales):
            out = out + self._delta(x, i) * scale
        return out


# The per-module tables nn.Module keeps (parameters, buffers, children, hooks...).
_MODULE_TABLES = tuple(k for k, v in torch.nn.Module().__dict__.items() if isinstance(v, (dict, set)))


def _structural_copy(module: torch.nn.Module, memo: dict[int, torch.nn.Module]) -> torch.nn.Module:
    """A copy of every module object in the tree, sharing every parameter and buffer tensor.

    Each copy gets its own parameter, buffer, child and hook tables, so nothing done to the
    view (a library installing forward hooks on first use, as transformers 5 does to record
    hidden states) reaches the base model, and the reverse.
    """
    if id(module) in memo:
        return memo[id(module)]
    clone = copy.copy(module)
    memo[id(module)] = clone
    for key in _MODULE_TABLES:
        if key in module.__dict__:
            object.__setattr__(clone, key, copy.copy(module.__dict__[key]))
    for name, child in module._modules.items():
        if child is not None:
            clone._modules[name] = _structural_copy(child, memo)
    return clone


def patched_view(root: torch.nn.Module, deltas: Mapping[str, Sequence[LoraDelta]]) -> torch.nn.Module:
    """A view of ``root`` whose layers named in ``deltas`` (dotted module names of Linear or
    Conv2d layers) are ``LoraAdapter``s. ``root`` and its modules are left unchanged.

    The view's module objects are copies (a few thousand small Python objects for an SDXL
    UNet, no tensor data); its weights are the base model's tensors.
    """
    view = _structural_copy(root, {})
    for name, layer_deltas in deltas.items():
        parent_path, _, leaf = name.rpartition(".")
        parent = view.get_submodule(parent_path) if parent_path else view
        parent._modules[leaf] = LoraAdapter(parent._modules[leaf], layer_deltas)
    return view
