"""Several conditioning entries, each over an area or mask, combined into one prediction.

ComfyUI evaluates every entry of a CONDITIONING list on its own part of the latent and
averages the predictions per latent pixel, weighted by each entry's multiplier:

    D(x)[p] = sum_i w_i[p] * D_i(x_i)[p] / sum_i w_i[p]

where ``x_i`` is the latent cropped to entry i's area (the UNet sees only that crop) and
``w_i`` its multiplier there: ``strength``, times the mask (times ``mask_strength``) for a
masked entry, and for an area entry without a mask a linear feather over
:data:`FEATHER` latent pixels along each area edge that lies inside the latent.  Pixels
no entry covers get 0, as in ComfyUI.  Areas are ``(height, width, y, x)`` in latent
pixels (ConditioningSetArea divides its pixel values by 8), or
``("percentage", height, width, y, x)`` as fractions of the latent.

Every entry is a :class:`CondRegion`; entries whose crops have the same size and carry
the same keys are run in one batched UNet call, cond and uncond together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

FEATHER = 8  # latent pixels of linear fade along an area's inner edges (ComfyUI's value)
MIN_BOUNDS = 8  # smallest side of an area set from a mask's bounds, in latent pixels
SPATIAL_KEYS = frozenset({"concat"})  # UNet inputs laid out like the latent: cropped with it

Area = tuple[int, int, int, int]  # (height, width, y, x), latent pixels, inside the latent


@dataclass
class CondRegion:
    """One conditioning entry resolved for a latent of a known size.

    ``cond``: the UNet's keyword tensors (``context`` [1 or B, T, D], ...; spatial keys
    such as ``concat`` [1 or B, C', H, W] at the full latent size).  ``area``: where it
    applies, ``(height, width, y, x)`` in latent pixels, inside the latent.  ``weight``:
    its multiplier over the area, [1 or B, 1, height, width], or None for 1 everywhere.
    ``explicit_area``: the entry named an area (directly or by its mask's bounds), which
    makes the opposite list get a twin over the same area (see :func:`add_area_twins`).
    ``sigma_range``: ``(high, low)``, the noise levels between which the entry takes part
    (ConditioningSetTimestepRange), or None for every step.
    """

    cond: dict[str, torch.Tensor]
    area: Area
    weight: torch.Tensor | None = None
    explicit_area: bool = False
    extras: Mapping[str, Any] = field(default_factory=dict)
    sigma_range: tuple[float, float] | None = None

    @property
    def is_plain(self) -> bool:
        """True for an entry over the whole latent with weight 1 at every step (the classic
        single prompt)."""
        return not self.explicit_area and self.weight is None and self.sigma_range is None

    def active_at(self, sigma: float) -> bool:
        """Whether the entry takes part in the step at noise level ``sigma``."""
        return self.sigma_range is None or self.sigma_range[1] <= sigma <= self.sigma_range[0]


def _clamp_area(area: Sequence[float], height: int, width: int) -> Area:
    h, w, y, x = (int(v) for v in area)
    y, x = min(max(y, 0), height), min(max(x, 0), width)
    return (max(0, min(h, height - y)), max(0, min(w, width - x)), y, x)


def _resolve_area(value: Any, height: int, width: int) -> Area:
    if isinstance(value, (tuple, list)) and len(value) == 5 and value[0] == "percentage":
        _, h, w, y, x = value
        return _clamp_area((max(1, round(h * height)), max(1, round(w * width)), round(y * height),
                            round(x * width)), height, width)
    if isinstance(value, (tuple, list)) and len(value) == 4:
        return _clamp_area(value, height, width)
    raise ValueError(f"conditioning area must be (height, width, y, x) in latent pixels, got {value!r}")


def _resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A MASK ([H, W] or [B, H, W], any size) -> [B, 1, height, width] (bilinear)."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4):
        raise ValueError("conditioning mask must be a tensor [H, W] or [B, H, W]")
    m = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    if m.shape[-2:] != (height, width):
        m = F.interpolate(m, size=(height, width), mode="bilinear", align_corners=False)
    return m


def _mask_bounds(mask: torch.Tensor, height: int, width: int) -> Area:
    """The bounding box of a mask's non-zero pixels over its batch, at least MIN_BOUNDS a side."""
    nonzero = (mask.abs().amax(dim=(0, 1)) != 0).nonzero()
    if nonzero.numel() == 0:  # an empty mask contributes nothing; keep its area small
        return _clamp_area((MIN_BOUNDS, MIN_BOUNDS, 0, 0), height, width)
    top, left = (int(v) for v in nonzero.min(dim=0).values)
    bottom, right = (int(v) for v in nonzero.max(dim=0).values)
    return _clamp_area((max(MIN_BOUNDS, bottom - top + 1), max(MIN_BOUNDS, right - left + 1), top, left),
                       height, width)


def _feather(area: Area, height: int, width: int) -> torch.Tensor:
    """[1, 1, h, w] weights fading linearly to 1/FEATHER at the area edges inside the latent."""
    h, w, y, x = area

    def ramp(n: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
        r = torch.ones(n)
        steps = (torch.arange(FEATHER, dtype=torch.float32) + 1) / FEATHER
        k = min(FEATHER, n)
        if fade_start:
            r[:k] *= steps[:k]
        if fade_end:
            r[n - k:] *= steps[:k].flip(0)
        return r

    rows = ramp(h, y != 0, y + h < height)
    cols = ramp(w, x != 0, x + w < width)
    return (rows[:, None] * cols[None, :])[None, None]


def make_region(cond: dict[str, torch.Tensor], extras: Mapping[str, Any], height: int, width: int) -> CondRegion:
    """Resolves one entry's ``area`` / ``mask`` / ``strength`` options for an ``height`` x
    ``width`` latent (see the module docstring for their meaning)."""
    strength = float(extras.get("strength", 1.0))
    area: Area = (height, width, 0, 0)
    explicit = False
    if extras.get("area") is not None:
        area, explicit = _resolve_area(extras["area"], height, width), True
    mask = extras.get("mask")
    weight: torch.Tensor | None = None
    if mask is not None:
        full = _resize_mask(mask, height, width)
        if extras.get("set_area_to_bounds", False):
            area, explicit = _mask_bounds(full, height, width), True
        h, w, y, x = area
        weight = full[:, :, y:y + h, x:x + w] * float(extras.get("mask_strength", 1.0)) * strength
    elif explicit:
        weight = _feather(area, height, width) * strength
    elif strength != 1.0:
        weight = torch.full((1, 1, height, width), strength)
    return CondRegion(cond=dict(cond), area=area, weight=weight, explicit_area=explicit, extras=extras)


def _covers(outer: Area, inner: Area) -> bool:
    return (inner[2] >= outer[2] and inner[3] >= outer[3] and outer[0] + outer[2] >= inner[0] + inner[2]
            and outer[1] + outer[3] >= inner[1] + inner[3])


def add_area_twins(target: list[CondRegion], source: Sequence[CondRegion]) -> None:
    """For each area entry of ``source``, give ``target`` an entry over the same area and
    weights, with the conditioning of the smallest ``target`` entry covering it (an
    area-less entry counts as covering when nothing smaller does), so that the guidance
    difference cond - uncond is formed on the same crop.  ComfyUI does the same."""
    for region in source:
        if not region.explicit_area:
            continue
        best: CondRegion | None = None
        for candidate in target:
            if candidate.explicit_area:
                if not _covers(candidate.area, region.area):
                    continue
                if best is None or not best.explicit_area or (
                        best.area[0] * best.area[1] > candidate.area[0] * candidate.area[1]):
                    best = candidate
            elif best is None:
                best = candidate
        if best is None or (best.explicit_area and best.area == region.area):
            continue
        target.append(replace(region, cond=best.cond, extras=best.extras))


def fit_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeats a tensor with batch 1 (or a divisor of ``batch``) to ``batch`` items."""
    if t.shape[0] == batch:
        return t
    if batch % t.shape[0] == 0:
        return t.repeat(batch // t.shape[0], *([1] * (t.ndim - 1)))
    raise ValueError(f"a batch of {t.shape[0]} does not divide a batch of {batch}")


def _crop(region: CondRegion) -> dict[str, torch.Tensor]:
    h, w, y, x = region.area
    return {k: (v[..., y:y + h, x:x + w] if k in SPATIAL_KEYS else v) for k, v in region.cond.items()}


def predict_regions(denoiser: Callable[..., torch.Tensor], x: torch.Tensor, sigma: torch.Tensor,
                    groups: Sequence[Sequence[CondRegion]],
                    concat: Callable[[list[Mapping[str, torch.Tensor]], int], dict[str, torch.Tensor]],
                    ) -> list[torch.Tensor]:
    """One combined x0 prediction [B, C, H, W] per group of regions (e.g. uncond, cond).

    Regions of every group whose crops share a size and keys go through ``denoiser`` in
    one call; ``concat(conds, batch)`` joins their keyword tensors along the batch. Regions
    not active at this step's ``sigma`` are left out (where none is, the prediction is 0,
    as in ComfyUI).
    """
    batch = x.shape[0]
    totals = [torch.zeros_like(x) for _ in groups]
    counts = [torch.zeros_like(x[:, :1]) for _ in groups]
    buckets: dict[tuple, list[tuple[int, CondRegion]]] = {}
    step_sigma = float(sigma.reshape(-1)[0])
    for index, regions in enumerate(groups):
        for region in regions:
            h, w = region.area[:2]
            if h == 0 or w == 0 or not region.active_at(step_sigma):
                continue
            buckets.setdefault((h, w, tuple(sorted(region.cond))), []).append((index, region))
    for jobs in buckets.values():
        crops = [x[..., top:top + h, left:left + w] for _, r in jobs for h, w, top, left in [r.area]]
        conds = concat([_crop(r) for _, r in jobs], batch)
        out = denoiser(torch.cat(crops), sigma.repeat(len(jobs)), **conds)
        for (index, region), pred in zip(jobs, out.split(batch), strict=True):
            h, w, top, left = region.area
            weight = torch.ones_like(pred[:, :1]) if region.weight is None else \
                fit_batch(region.weight.to(pred.device, pred.dtype), batch)
            totals[index][..., top:top + h, left:left + w] += pred * weight
            counts[index][..., top:top + h, left:left + w] += weight
    return [total / count.clamp_min(1e-37) for total, count in zip(totals, counts, strict=True)]
