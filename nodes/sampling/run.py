"""One call that runs a sampler the way KSampler does: noise, mask, sample.

The node layer builds the denoiser (:class:`~nodes.sampling.denoiser.CFGDenoiser`) and the
sigmas (:mod:`nodes.sampling.step_sigmas`) and hands them here together with the seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from .noise import initial_noise, make_noise_sampler
from .noise_schedule import DiscreteSchedule
from .sampler_base import Callback, Model, denoise_with_uncond
from .samplers import SamplerSpec, get_sampler
from .step_sigmas import is_max_denoise, noise_latent


def prepare_mask(mask: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """A noise mask ([H, W], [B, H, W] or [B, 1, H, W], 1 = regenerate) resized bilinearly
    to the latent's h, w and broadcast to [B, C, h, w] on the latent's device."""
    m = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    m = F.interpolate(m, size=latent.shape[-2:], mode="bilinear", align_corners=False)
    m = m.repeat(1, latent.shape[1], 1, 1)
    if m.shape[0] != latent.shape[0]:
        if latent.shape[0] % m.shape[0]:
            raise ValueError(f"mask batch {m.shape[0]} does not divide latent batch {latent.shape[0]}")
        m = m.repeat(latent.shape[0] // m.shape[0], 1, 1, 1)
    return m.to(device=latent.device, dtype=latent.dtype)


class MaskedDenoiser:
    """Inpainting: only the masked region is generated.

    Before each model call the unmasked region of x is replaced by the original latent
    noised to the current sigma (with the run's own noise); the model's x0 estimate there is
    replaced by the original latent.  ``mask`` [B, C, h, w], 1 = regenerate.
    """

    def __init__(self, model: Model, latent: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor) -> None:
        self.model, self.latent, self.noise, self.mask = model, latent, noise, mask

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self._paste(self.model(self._masked_input(x, sigma), sigma))

    def with_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both estimates of a guided model (for CFG++ samplers), each kept to the mask."""
        guided, uncond = denoise_with_uncond(self.model, self._masked_input(x, sigma), sigma)
        return self._paste(guided), self._paste(uncond)

    def _masked_input(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return x * self.mask + (self.latent + self.noise * s) * (1 - self.mask)

    def _paste(self, denoised: torch.Tensor) -> torch.Tensor:
        return denoised * self.mask + self.latent * (1 - self.mask)


def inpaint_noise(spec: SamplerSpec, noise: torch.Tensor, seed: int) -> torch.Tensor:
    """The noise the kept region of an inpainting run is re-noised with, like ``noise``
    [B, C, h, w]: the starting noise, or for samplers with ``fresh_inpaint_noise`` (ddim)
    a CPU draw from seed + 1, as ComfyUI makes it (even when no starting noise was added)."""
    if not spec.fresh_inpaint_noise:
        return noise
    generator = torch.Generator("cpu").manual_seed((int(seed) + 1) % 2**64)
    return torch.randn(noise.shape, generator=generator).to(device=noise.device, dtype=noise.dtype)


def run_sampler(model: Model, latent: torch.Tensor, sigmas: torch.Tensor, sampler_name: str, *,
                schedule: DiscreteSchedule, seed: int, add_noise: bool = True,
                noise_mask: torch.Tensor | None = None, callback: Callback | None = None,
                batch_index: list[int] | None = None, noise: torch.Tensor | None = None,
                options: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Sample from ``latent`` [B, C, h, w] along ``sigmas`` with ``sampler_name``.

    - Fewer than 2 sigmas (denoise 0, or KSamplerAdvanced with nothing to do): ``latent`` is
      returned unchanged.
    - Starting noise is :func:`~nodes.sampling.noise.initial_noise` for ``seed`` (CPU, then
      moved to the latent's device), or zeros when ``add_noise`` is False (KSamplerAdvanced
      "add_noise: disable", for a latent that already carries its noise). ``batch_index``
      picks the noise of given batch positions (see ``initial_noise``).
    - Stochastic samplers get the noise ComfyUI gives them for ``seed``
      (:func:`~nodes.sampling.noise.make_noise_sampler`): Gaussian draws, or a torchsde
      Brownian tree over these sigmas for the SDE samplers.
    - ``noise_mask`` (1 = regenerate) keeps the rest of the latent; see :class:`MaskedDenoiser`.
    - ``callback(i, total, x, denoised)`` after every step; raise in it to interrupt.
    - ``model(x, sigma [B]) -> x0``, e.g. a :class:`~nodes.sampling.denoiser.CFGDenoiser`.
    - ``noise`` [B, C, h, w]: the starting noise itself (SamplerCustomAdvanced's NOISE),
      instead of ``add_noise``/``batch_index``; ``seed`` still seeds the per-step noise.
      Then a single sigma means no step, but the latent is still noised to it (ComfyUI's
      custom sampling does so).
    - ``options``: keyword options for the sampler function (e.g. SamplerEulerAncestral's
      ``eta``), over the sampler table's own.
    """
    spec = get_sampler(sampler_name)
    if len(sigmas) < (2 if noise is None else 1):
        return latent
    if noise is not None:
        noise = noise.to(device=latent.device, dtype=latent.dtype)
    elif add_noise:
        noise = initial_noise(latent.shape, seed, batch_index).to(device=latent.device, dtype=latent.dtype)
    else:
        noise = torch.zeros_like(latent)
    sigma_start = float(sigmas[0])
    x = noise_latent(latent, noise, sigma_start, is_max_denoise(schedule, sigma_start))
    mask = None
    if noise_mask is not None:
        mask = prepare_mask(noise_mask, latent)
        model = MaskedDenoiser(model, latent, inpaint_noise(spec, noise, seed), mask)
    sigmas = sigmas.to(torch.float32)
    # per-step noise as ComfyUI draws it for this seed; SDE trees span these very sigmas
    if len(sigmas) > 1:
        noise_sampler = make_noise_sampler(spec.noise, x, seed, sigmas)
        x = spec.fn(model, x, sigmas, callback=callback, noise_sampler=noise_sampler,
                    **{**spec.options(schedule), **(options or {})})
    if mask is not None:
        # where the mask is 0 the sampler already returns the latent (noised to the last
        # sigma) up to rounding: make that exact.  Blending again would apply a soft mask
        # twice (ComfyUI returns the sampler's result as it is)
        x = torch.where(mask == 0, latent + noise * float(sigmas[-1]), x)
    return x
