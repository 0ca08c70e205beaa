"""DPM-Solver++ family: exponential-integrator samplers in data (x0) prediction.

Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models" (arXiv:2211.01095).  With lambda = -log(sigma) ("half log-SNR" in sigma units) and
h = lambda_next - lambda, the first-order update is
    x_next = (sigma_next / sigma) * x + (1 - exp(-h)) * D(x, sigma),
which is DDIM; the solvers below add multistep / singlestep / SDE corrections as in
k-diffusion.  SDE variants (eta > 0) add noise with the variance of the exact
Ornstein-Uhlenbeck step; pass a :class:`~nodes.sampling.noise.BrownianTreeNoise`.
See :mod:`nodes.sampling.sampler_base` for the signature and callback contract.
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
    notify,
    require_noise,
    sigma_list,
)


def sample_dpmpp_2m(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                    noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Alg. 2 of the paper): second-order multistep using the previous
    step's x0 estimate; first and last steps are first order.  One model call per step."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    old_denoised = None
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        if sig[i + 1] == 0:
            x = denoised
        else:
            h = math.log(sig[i] / sig[i + 1])
            target = denoised
            if old_denoised is not None:
                r = math.log(sig[i - 1] / sig[i]) / h
                target = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sig[i + 1] / sig[i]) * x - math.expm1(-h) * target
        old_denoised = denoised
        notify(callback, i, n, x, denoised)
    return x


def sample_dpmpp_2m_sde(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                        noise_sampler: NoiseSampler | None = None, eta: float = 1.0, s_noise: float = 1.0,
                        solver_type: str = "midpoint") -> torch.Tensor:
    """DPM-Solver++(2M) SDE (k-diffusion's ``sample_dpmpp_2m_sde``, midpoint correction by
    default, ``solver_type="heun"`` also available).  One model call per step."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError("solver_type must be 'midpoint' or 'heun'")
    noise = require_noise(noise_sampler, "dpmpp_2m_sde") if eta else None
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    old_denoised, h_last = None, None
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        if sig[i + 1] == 0:
            x = denoised
        else:
            h = math.log(sig[i] / sig[i + 1])
            eta_h = eta * h
            phi = -math.expm1(-h - eta_h)
            x = (sig[i + 1] / sig[i]) * math.exp(-eta_h) * x + phi * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + (phi / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * phi * (1 / r) * (denoised - old_denoised)
            if noise is not None:
                x = x + noise(sig[i], sig[i + 1]) * sig[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
            h_last = h
        old_denoised = denoised
        notify(callback, i, n, x, denoised)
    return x


def sample_dpmpp_3m_sde(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                        noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
                        s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(3M) SDE (k-diffusion's ``sample_dpmpp_3m_sde``): third-order multistep
    using two previous x0 estimates, with SDE noise.  One model call per step."""
    noise = require_noise(noise_sampler, "dpmpp_3m_sde") if eta else None
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    d_1 = d_2 = None  # previous x0 estimates, newest first
    h_1 = h_2 = None
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        if sig[i + 1] == 0:
            x = denoised
        else:
            h = math.log(sig[i] / sig[i + 1])
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                x = x + phi_2 * (denoised - d_1) / (h_1 / h)
            if noise is not None:
                x = x + noise(sig[i], sig[i + 1]) * sig[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
            h_1, h_2 = h, h_1
        d_1, d_2 = denoised, d_1
        notify(callback, i, n, x, denoised)
    return x


def sample_dpmpp_2s_ancestral(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *,
                              callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
                              eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver++(2S): a second-order singlestep step (midpoint in lambda) down
    to sigma_down, then fresh noise of std sigma_up.  Two model calls per step."""
    noise = require_noise(noise_sampler, "dpmpp_2s_ancestral")
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        down, up = ancestral_step(sig[i], sig[i + 1], eta)
        if down == 0:
            x = x + (x - denoised) / sig[i] * (down - sig[i])
        else:
            h = math.log(sig[i] / down)
            s_mid = sig[i] * math.exp(-0.5 * h)
            x_2 = (s_mid / sig[i]) * x - math.expm1(-0.5 * h) * denoised
            denoised_2 = model(x_2, batch_sigma(x, s_mid))
            x = (down / sig[i]) * x - math.expm1(-h) * denoised_2
        if sig[i + 1] > 0:
            x = x + noise(sig[i], sig[i + 1]) * s_noise * up
        notify(callback, i, n, x, denoised)
    return x


def sample_dpmpp_sde(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                     noise_sampler: NoiseSampler | None = None, eta: float = 1.0, s_noise: float = 1.0,
                     r: float = 0.5) -> torch.Tensor:
    """DPM-Solver++ SDE, second-order singlestep (k-diffusion's ``sample_dpmpp_sde``): an
    ancestral sub-step to lambda + r*h, then a combined step to the next sigma; the two
    noise draws share a Brownian path, so use :class:`~nodes.sampling.noise.BrownianTreeNoise`.
    Two model calls per step (one on the last)."""
    noise = require_noise(noise_sampler, "dpmpp_sde")
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    fac = 1 / (2 * r)
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        if sig[i + 1] == 0:
            x = x + (x - denoised) / sig[i] * (sig[i + 1] - sig[i])
        else:
            s_cur = sig[i]
            h = math.log(s_cur / sig[i + 1])
            s_mid = s_cur * math.exp(-r * h)
            # step 1: to the intermediate sigma
            down, up = ancestral_step(s_cur, s_mid, eta)
            x_2 = (down / s_cur) * x - math.expm1(-math.log(s_cur / down)) * denoised
            x_2 = x_2 + noise(s_cur, s_mid) * s_noise * up
            denoised_2 = model(x_2, batch_sigma(x, s_mid))
            # step 2: to the next sigma, with a blended x0 estimate
            down, up = ancestral_step(s_cur, sig[i + 1], eta)
            blend = (1 - fac) * denoised + fac * denoised_2
            x = (down / s_cur) * x - math.expm1(-math.log(s_cur / down)) * blend
            x = x + noise(s_cur, sig[i + 1]) * s_noise * up
        notify(callback, i, n, x, denoised)
    return x
