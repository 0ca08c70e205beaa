"""Weights stored at the file's precision, computed at the run's: a per-layer upcast.

Most checkpoints people share are fp16 on disk, and the CPU computes in fp32. Converting
every weight to fp32 at load doubles the memory a model takes (an SD1.5 UNet: 1.6 GiB in
fp16, 3.3 GiB in fp32) and the load's time goes into writing that copy. Instead, the
weight matrices and kernels of ``Linear``, ``Conv2d`` and ``Embedding`` layers stay in the
file's dtype, and each layer casts its weight to the compute dtype as it runs. An fp16 ->
fp32 cast is exact, so the results are the same as with converted weights; the cast copy
of one layer lives only while that layer runs. The casts cost time, most where a layer has
least compute per weight: on this project's 2-core CPU box an SD1.5 UNet call at 256x256
took 1.67 s against 1.50 s converted, an SDXL one 1.27x at 256x256 and 1.03x at 512x512
(bench/RESULTS.md; ``--convert-weights-at-load`` converts instead).

Only those three layer types, and only their ``weight``, are kept narrow: biases, norm
scales and every other tensor are small and are converted at load. Code that inspects a
model's dtype through such a vector (diffusers' VAE decoder picks its upsampling dtype from
the first parameter of its up blocks, a norm scale) therefore sees the compute dtype.

``keep_narrow_keys(model)`` lists the state-dict keys that may stay narrow (the loader
reads those in the file's dtype when it is narrower than the compute dtype);
``install(model, dtype)`` switches the layers whose weight is narrower to casting
versions and converts every other floating tensor to ``dtype``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class CastLinear(torch.nn.Linear):
    """A ``Linear`` whose weight is stored narrower and cast to ``compute_dtype`` per call."""

    compute_dtype: torch.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(self.compute_dtype), self.bias)


class CastConv2d(torch.nn.Conv2d):
    """A ``Conv2d`` whose kernel is stored narrower and cast to ``compute_dtype`` per call."""

    compute_dtype: torch.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight.to(self.compute_dtype), self.bias)


class CastEmbedding(torch.nn.Embedding):
    """An ``Embedding`` whose table is stored narrower: the looked-up rows are cast, not the table."""

    compute_dtype: torch.dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)
        return rows.to(self.compute_dtype)


# Exact types only: a subclass may have its own forward, which the casting one would replace.
CASTING = {torch.nn.Linear: CastLinear, torch.nn.Conv2d: CastConv2d, torch.nn.Embedding: CastEmbedding}


def keep_narrow_keys(model: torch.nn.Module) -> set[str]:
    """State-dict keys of ``model`` whose tensor may stay in a narrower stored dtype: the
    ``weight`` of every layer of exactly ``Linear``, ``Conv2d`` or ``Embedding`` type."""
    return {f"{name}.weight" if name else "weight"
            for name, module in model.named_modules() if type(module) in CASTING}


def install(model: torch.nn.Module, compute_dtype: torch.dtype) -> torch.nn.Module:
    """Make ``model`` compute in ``compute_dtype`` whatever dtype its weights are stored in.

    A ``Linear``/``Conv2d``/``Embedding`` whose weight is a floating dtype narrower than
    ``compute_dtype`` becomes its casting version (same object, same parameters, same
    state-dict keys); every other floating parameter or buffer not in ``compute_dtype`` is
    converted to it. Returns ``model``.
    """
    wide = torch.finfo(compute_dtype).bits
    for module in model.modules():
        cast_class = CASTING.get(type(module))
        weight = getattr(module, "weight", None) if cast_class else None
        keep = weight is not None and weight.is_floating_point() and torch.finfo(weight.dtype).bits < wide
        if keep:
            module.__class__ = cast_class
            module.compute_dtype = compute_dtype
        for name, param in module.named_parameters(recurse=False):
            if param.is_floating_point() and param.dtype != compute_dtype and not (keep and name == "weight"):
                param.data = param.data.to(compute_dtype)
        for name, buf in module.named_buffers(recurse=False):
            if buf.is_floating_point() and buf.dtype != compute_dtype:
                module.register_buffer(name, buf.to(compute_dtype), persistent=name not in module._non_persistent_buffers_set)
    return model


def compute_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype ``model`` computes in: that of its casting layers, else of its first floating parameter."""
    fallback = None
    for module in model.modules():
        if isinstance(module, tuple(CASTING.values())):
            return module.compute_dtype
        if fallback is None:
            fallback = next((p.dtype for p in module.parameters(recurse=False) if p.is_floating_point()), None)
    return fallback or torch.float32

