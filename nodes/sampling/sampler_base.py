"""Types and small formulas shared by the sampler functions.

Conventions for every sampler ``sample_NAME(model, x, sigmas, *, callback, noise_sampler)``:

- ``model(x, sigma) -> denoised``: ``x`` [B, C, H, W] is a noisy latent x0 + sigma * eps in
  the variance-exploding ("sigma") parameterisation, ``sigma`` a float tensor [B]; the
  result is the model's estimate of x0, same shape as ``x``.
- ``x``: the starting latent, already noised to ``sigmas[0]``.
- ``sigmas``: 1-D, descending noise levels; ``len(sigmas) - 1`` steps are taken.  Steps are
  counted this way for every sampler, so the callback's total is known up front.
- ``callback(i, total, x, denoised)``: called once after step ``i`` (0-based) of ``total``
  with the updated latent and that step's x0 estimate.  An exception raised in it (an
  interrupt) propagates at once, so sampling stops within one step.
- ``noise_sampler(sigma, sigma_next) -> N(0, 1) noise like x``: required by stochastic
  samplers (see :mod:`nodes.sampling.noise`); deterministic ones ignore it.
- CFG++-style samplers (``*_cfg_pp``) also need the unconditional x0 estimate of each
  call; they get it through :func:`denoise_with_uncond`, which uses the model's
  ``with_uncond(x, sigma) -> (guided, uncond)`` (see :class:`GuidedModel`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
NoiseSampler = Callable[[float, float], torch.Tensor]


@runtime_checkable
class GuidedModel(Protocol):
    """A model that applies guidance and can also return its unconditional estimate.

    ``with_uncond(x, sigma)`` returns ``(guided, uncond)`` x0 estimates from one evaluation,
    the unconditional side evaluated even where plain calls skip it (cfg = 1): this is what
    ComfyUI's post-CFG hook hands its CFG++ samplers, with the cfg = 1 shortcut disabled.
    Wrappers around such a model (e.g. an inpainting mask) must forward ``with_uncond``.
    """

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...

    def with_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def denoise_with_uncond(model: Model, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(guided, uncond)`` x0 estimates of ``model`` at ``(x, sigma)`` (see :class:`GuidedModel`).

    A model without ``with_uncond`` applies no guidance, so its one estimate is also its
    unconditional one: a CFG++ sampler then takes exactly its base method's steps.
    """
    if isinstance(model, GuidedModel):
        return model.with_uncond(x, sigma)
    denoised = model(x, sigma)
    return denoised, denoised


def batch_sigma(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``sigma`` repeated for each batch item: float tensor [B] on ``x``'s device."""
    return torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device)


def sigma_list(sigmas: torch.Tensor | list[float]) -> list[float]:
    """Sigmas as Python floats (step coefficients are computed in float64)."""
    return [float(s) for s in sigmas]


def require_noise(noise_sampler: NoiseSampler | None, name: str) -> NoiseSampler:
    """Return ``noise_sampler``, or refuse to run a stochastic sampler without one."""
    if noise_sampler is None:
        raise ValueError(f"sampler {name!r} is stochastic and needs a noise_sampler (see nodes.sampling.noise)")
    return noise_sampler


def ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """Split the move from ``sigma_from`` to ``sigma_to`` into a deterministic step down to
    ``sigma_down`` plus fresh noise of std ``sigma_up``, with sigma_down^2 + sigma_up^2 =
    sigma_to^2 (the DDPM posterior variance when eta = 1; Song et al. 2021 eq. 16).
    Returns (sigma_down, sigma_up)."""
    if not eta or sigma_to == 0:
        return sigma_to, 0.0
    up = min(sigma_to, eta * math.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2))
    return math.sqrt(sigma_to**2 - up**2), up


def notify(callback: Callback | None, i: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
    """Call ``callback`` if given (see module docstring)."""
    if callback is not None:
        callback(i, total, x, denoised)
