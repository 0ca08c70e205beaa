"""The values of ComfyUI's custom-sampling types, SAMPLER and NOISE, and dual-prompt guidance.

A sampling run is four independent pieces (ComfyUI's SamplerCustomAdvanced): the noise
(:class:`NoiseSource`), the guidance that turns a latent into an x0 estimate (a GUIDER,
see :mod:`nodes.sd.guiders`), the sampler (:class:`SamplerChoice`) and the sigmas (a
float32 tensor). KSampler is the same run with its pieces built from its widgets.

Both value classes are frozen and small, so the output cache can keep them like any
other output; nothing here touches a model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .noise import initial_noise
from .regions import CondRegion, add_area_twins, predict_regions
from .samplers import SamplerSpec, get_sampler


@dataclass(frozen=True)
class SamplerChoice:
    """SAMPLER: a sampler of the table (:mod:`nodes.sampling.samplers`) by its ComfyUI name,
    with keyword options for its function (e.g. ``eta``, ``s_noise``, ``order``,
    ``solver_type``); options left out keep the function's defaults.

    ``options`` is a tuple of (name, value) pairs so that the value stays hashable.
    An unknown name raises ``ValueError`` when the choice is made, not when it runs.
    """

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        get_sampler(self.name)

    @classmethod
    def of(cls, name: str, **options: Any) -> SamplerChoice:
        """The choice of ``name`` with ``options`` as keyword arguments."""
        return cls(name, tuple(sorted(options.items())))

    @property
    def spec(self) -> SamplerSpec:
        return get_sampler(self.name)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True)
class NoiseSource:
    """NOISE: the starting noise of a run and the seed its stochastic steps draw with.

    Enabled: ``torch.randn`` from a CPU generator seeded with ``seed``
    (:func:`~nodes.sampling.noise.initial_noise`, ComfyUI's RandomNoise). Disabled: zeros,
    for a latent that already carries its noise (DisableNoise, KSamplerAdvanced's
    add_noise "disable"); ``seed`` still seeds the stochastic samplers' noise, as in ComfyUI.
    """

    seed: int = 0
    enabled: bool = True

    def generate(self, shape: torch.Size | tuple[int, ...], batch_index: list[int] | None = None) -> torch.Tensor:
        """The starting noise, float32 on the CPU, of ``shape`` [B, C, h, w]; ``batch_index``
        (a LATENT's) picks the noise of given batch positions."""
        if not self.enabled:
            return torch.zeros(tuple(shape))
        return initial_noise(shape, self.seed, batch_index)


ConcatConds = Callable[[list[Mapping[str, torch.Tensor]], int], dict[str, torch.Tensor]]


class DualCFGDenoiser:
    """Guidance with two prompts and a negative (ComfyUI's DualCFGGuider), for x0 estimates
    D1 (``cond1``), D2 (``cond2``) and Dn (``negative``):

      regular: D = Dn + cfg2 * (D2 - Dn) + cfg1 * (D1 - D2)
      nested:  D = Dn + cfg2 * (D2 + cfg1 * (D1 - D2) - Dn)

    i.e. cfg1 (``cfg_conds``) pushes from prompt 2 towards prompt 1 and cfg2
    (``cfg_cond2_negative``) from the negative towards prompt 2. In the regular style a
    side whose weight is exactly 1 cancels out, so (as ComfyUI does) it is not evaluated:
    cfg2 = 1 skips the negative, and cfg1 = cfg2 = 1 leaves prompt 1 alone.
    All estimates of one step come from one batched call per crop size
    (:func:`~nodes.sampling.regions.predict_regions`). ``denoiser(x, sigma, **cond) -> x0``.
    """

    def __init__(self, denoiser: Callable[..., torch.Tensor], cond1: Sequence[CondRegion],
                 cond2: Sequence[CondRegion], negative: Sequence[CondRegion], cfg1: float, cfg2: float,
                 nested: bool, concat: ConcatConds) -> None:
        self.denoiser, self.concat = denoiser, concat
        self.cfg1, self.cfg2, self.nested = float(cfg1), float(cfg2), nested
        self.groups = [list(negative), list(cond2), list(cond1)]
        if not all(self.groups):
            raise ValueError("DualCFGGuider needs non-empty cond1, cond2 and negative conditionings")
        # each prompt's area entries get a same-area twin in the others, so that every
        # difference is formed over the same crop (as for cond/uncond in CFG)
        for target in self.groups:
            for source in self.groups:
                if source is not target:
                    add_area_twins(target, list(source))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``x`` [B, C, h, w], ``sigma`` [B] -> guided x0 estimate [B, C, h, w]."""
        if self.nested:
            neg, mid, pos = predict_regions(self.denoiser, x, sigma, self.groups, self.concat)
            return neg + (mid + (pos - mid) * self.cfg1 - neg) * self.cfg2
        if self.cfg2 == 1.0:
            if self.cfg1 == 1.0:
                (pos,) = predict_regions(self.denoiser, x, sigma, self.groups[2:], self.concat)
                return pos
            mid, pos = predict_regions(self.denoiser, x, sigma, self.groups[1:], self.concat)
            return mid + (pos - mid) * self.cfg1
        neg, mid, pos = predict_regions(self.denoiser, x, sigma, self.groups, self.concat)
        return neg + (mid - neg) * self.cfg2 + (pos - mid) * self.cfg1
