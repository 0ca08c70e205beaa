"""RES multistep and gradient-estimation samplers, each with a CFG++ form.

- RES (Zhang et al. 2023, "Improving the Diffusion-Based Image Generation... Refined
  Exponential Solver", arXiv:2308.02157): a second-order exponential multistep method in
  data prediction whose weights satisfy the order conditions exactly (phi functions of
  the step in lambda = -log sigma), optionally ancestral.
- Gradient estimation (Permenter & Yuan 2024, "Interpreting and Improving Diffusion
  Models from an Optimization Perspective", ICML): Euler on the probability-flow ODE with
  the slope extrapolated by ``ge_gamma`` times the change of the denoising direction.

The ``cfg_pp`` flag takes the noise direction from the unconditional estimate (see
:mod:`nodes.sampling.samplers_cfgpp`).  See :mod:`nodes.sampling.sampler_base` for the
signature and callback contract.
"""

from __future__ import annotations

import math

import torch

from .sampler_base import (
    Callback,
    Model,
    NoiseSampler,
    ancestral_step,
    batch_sigma,
    denoise_with_uncond,
    notify,
    require_noise,
    sigma_list,
)


def _phi_1(z: float) -> float:
    """phi_1(z) = (e^z - 1) / z."""
    return math.expm1(z) / z


def _phi_2(z: float) -> float:
    """phi_2(z) = (phi_1(z) - 1) / z."""
    return (_phi_1(z) - 1) / z


def _res_multistep(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None,
                   noise_sampler: NoiseSampler | None, eta: float, s_noise: float, cfg_pp: bool,
                   name: str) -> torch.Tensor:
    """RES 2M (ComfyUI's ``res_multistep``): each step goes from sigma to sigma_down (the
    ancestral split, sigma_next when eta = 0) with
        x' = e^-h x + h (b1 D + b2 D_prev),  b2 = phi_2(-h) / c2,  b1 = phi_1(-h) - b2,
    where h = lambda(sigma_down) - lambda(sigma) and c2 is the previous evaluation's offset
    in lambda over h; the first step and the one to sigma 0 are Euler.  With ``cfg_pp``
    D and D_prev are unconditional and the guidance vector is added to x first."""
    noise = require_noise(noise_sampler, name) if eta and s_noise else None
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    old_denoised: torch.Tensor | None = None
    old_down = 0.0
    for i in range(n):
        # base: the estimate the RES update integrates (the unconditional one under CFG++)
        if cfg_pp:
            denoised, base = denoise_with_uncond(model, x, batch_sigma(x, sig[i]))
        else:
            denoised = base = model(x, batch_sigma(x, sig[i]))
        down, up = ancestral_step(sig[i], sig[i + 1], eta)
        if down == 0 or old_denoised is None:
            slope = (x - base) / sig[i]
            x = denoised + slope * down if cfg_pp else x + slope * (down - sig[i])
        else:
            h = math.log(sig[i] / down)
            # c2: where the previous evaluation sits, in units of h.  ComfyUI measures it from
            # the previous step's sigma_down (equal to sigma[i] unless ancestral)
            c2 = (math.log(old_down) - math.log(sig[i - 1])) / h
            b2 = _phi_2(-h) / c2
            b1 = _phi_1(-h) - b2
            if cfg_pp:
                x = x + (denoised - base)
            x = math.exp(-h) * x + h * (b1 * base + b2 * old_denoised)
        if noise is not None and sig[i + 1] > 0:
            x = x + noise(sig[i], sig[i + 1]) * s_noise * up
        old_denoised, old_down = base, down
        notify(callback, i, n, x, denoised)
    return x


def sample_res_multistep(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                         noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """RES second-order multistep, deterministic.  One model call per step."""
    return _res_multistep(model, x, sigmas, callback=callback, noise_sampler=None, eta=0.0, s_noise=1.0,
                          cfg_pp=False, name="res_multistep")


def sample_res_multistep_cfg_pp(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *,
                                callback: Callback | None = None,
                                noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """RES multistep with CFG++ (ComfyUI: the guidance vector enters scaled by e^-h).
    One model call per step."""
    return _res_multistep(model, x, sigmas, callback=callback, noise_sampler=None, eta=0.0, s_noise=1.0,
                          cfg_pp=True, name="res_multistep_cfg_pp")


def sample_res_multistep_ancestral(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *,
                                   callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
                                   eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral RES multistep: a RES step to sigma_down, then noise of std sigma_up."""
    return _res_multistep(model, x, sigmas, callback=callback, noise_sampler=noise_sampler, eta=eta,
                          s_noise=s_noise, cfg_pp=False, name="res_multistep_ancestral")


def sample_res_multistep_ancestral_cfg_pp(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *,
                                          callback: Callback | None = None,
                                          noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
                                          s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral RES multistep with CFG++."""
    return _res_multistep(model, x, sigmas, callback=callback, noise_sampler=noise_sampler, eta=eta,
                          s_noise=s_noise, cfg_pp=True, name="res_multistep_ancestral_cfg_pp")


def sample_gradient_estimation(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *,
                               callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
                               ge_gamma: float = 2.0, cfg_pp: bool = False) -> torch.Tensor:
    """Gradient estimation: an Euler step plus (ge_gamma - 1) * (d - d_prev) * dt, where d is
    the ODE slope (x - D) / sigma; the paper's "second-order" correction extrapolates the
    denoising direction across one step (its error is still first order in the step
    size).  The step to sigma 0 returns D.  With ``cfg_pp`` the slope is unconditional and
    the Euler part is CFG++'s D_g + sigma_next * d_u.  One model call per step."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    old_d: torch.Tensor | None = None
    for i in range(n):
        if cfg_pp:
            denoised, uncond = denoise_with_uncond(model, x, batch_sigma(x, sig[i]))
        else:
            denoised = uncond = model(x, batch_sigma(x, sig[i]))
        d = (x - uncond) / sig[i]
        dt = sig[i + 1] - sig[i]
        if sig[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sig[i + 1] if cfg_pp else x + d * dt
            if old_d is not None:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
        notify(callback, i, n, x, denoised)
    return x


def sample_gradient_estimation_cfg_pp(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *,
                                      callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
                                      ge_gamma: float = 2.0) -> torch.Tensor:
    """Gradient estimation with CFG++ (see :func:`sample_gradient_estimation`)."""
    return sample_gradient_estimation(model, x, sigmas, callback=callback, ge_gamma=ge_gamma, cfg_pp=True)
