"""CFG++ samplers: guidance on the data estimate only, the noise direction unguided.

Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion
Models" (arXiv:2406.08070), eq. 10: a DDIM step re-noises the guided x0 estimate along the
*unconditional* noise estimate,
    x_next = D_g(x, sigma) + sigma_next * (x - D_u(x, sigma)) / sigma,
instead of along the guided one (which would be plain Euler/DDIM with CFG).  Put
differently, each step is the base method run on the unconditional model, plus the
guidance vector D_g - D_u.  The samplers here follow ComfyUI's ``*_cfg_pp`` variants of
Euler, ancestral Euler, DPM-Solver++(2S) ancestral and DPM-Solver++(2M) as of ComfyUI
0.3.64 (which ``tests/test_sampling_comfy_oracle.py`` checks), including where ComfyUI
scales that vector or applies it differently.  Both estimates come from one model evaluation through
:func:`~nodes.sampling.sampler_base.denoise_with_uncond`; without guidance (a plain model,
or uncond == cond) each sampler takes exactly its base method's steps.
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
    denoise_with_uncond,
    notify,
    require_noise,
    sigma_list,
)


def sample_euler_ancestral_cfg_pp(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *,
                                  callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
                                  eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral Euler with CFG++: the guided x0 estimate, re-noised along the unconditional
    noise direction down to sigma_down, plus fresh noise of std sigma_up.  The last step
    (to sigma 0) returns the guided estimate.  One model call (cond + uncond) per step."""
    noise = require_noise(noise_sampler, "euler_ancestral_cfg_pp") if eta and s_noise else None
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    for i in range(n):
        denoised, uncond = denoise_with_uncond(model, x, batch_sigma(x, sig[i]))
        if sig[i + 1] == 0:
            x = denoised
        else:
            down, up = ancestral_step(sig[i], sig[i + 1], eta)
            x = denoised + (x - uncond) / sig[i] * down
            if noise is not None:
                x = x + noise(sig[i], sig[i + 1]) * s_noise * up
        notify(callback, i, n, x, denoised)
    return x


def sample_euler_cfg_pp(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                        noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Euler (DDIM) with CFG++, the paper's eq. 10: ancestral CFG++ Euler without noise.
    One model call per step."""
    return sample_euler_ancestral_cfg_pp(model, x, sigmas, callback=callback, eta=0.0, s_noise=0.0)


def sample_dpmpp_2s_ancestral_cfg_pp(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *,
                                     callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
                                     eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver++(2S) with CFG++ (ComfyUI 0.3.64's form): the state is moved by
    a guidance vector, y = x + (D_g - D_u), which makes y's noise direction the
    unconditional one, and the singlestep update (midpoint in lambda) runs from y on guided
    estimates down to sigma_down; then noise of std sigma_up is added.  For the full step
    ComfyUI takes D_u from the midpoint's evaluation (the latest one), so even without
    guidance the shift D_g(x) - D_u(x_mid) is not 0 and the samples come out too narrow
    (std ~0.8 of the data's on Gaussian data; later ComfyUI versions changed this sampler).
    We keep 0.3.64's maths, so its workflows give its images.  The last step returns D_g.
    Two model calls per step (one on the last)."""
    noise = require_noise(noise_sampler, "dpmpp_2s_ancestral_cfg_pp")
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    for i in range(n):
        denoised, uncond = denoise_with_uncond(model, x, batch_sigma(x, sig[i]))
        down, up = ancestral_step(sig[i], sig[i + 1], eta)
        if down == 0:
            x = denoised
        else:
            h = math.log(sig[i] / down)
            s_mid = sig[i] * math.exp(-0.5 * h)
            x_2 = (s_mid / sig[i]) * (x + (denoised - uncond)) - math.expm1(-0.5 * h) * denoised
            denoised_2, uncond_2 = denoise_with_uncond(model, x_2, batch_sigma(x, s_mid))
            # ComfyUI shifts by D_g minus the latest unconditional estimate, the midpoint's
            x = (down / sig[i]) * (x + (denoised - uncond_2)) - math.expm1(-h) * denoised_2
        if sig[i + 1] > 0:
            x = x + noise(sig[i], sig[i + 1]) * s_noise * up
        notify(callback, i, n, x, denoised)
    return x


def sample_dpmpp_2m_cfg_pp(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                           noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) with CFG++: x_next = D_g + e^-h (x - D_u), plus DPM-Solver++(2M)'s
    second-order term, which ComfyUI forms from the guided estimate and the previous
    *unconditional* one, (1 - e^-h) / (2r) * (D_g - D_u_prev).  First and last steps are
    first order (the last returns D_g).  One model call per step."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    old_uncond = None
    for i in range(n):
        denoised, uncond = denoise_with_uncond(model, x, batch_sigma(x, sig[i]))
        if sig[i + 1] == 0:
            x = denoised  # h is infinite: e^-h = 0
        else:
            h = math.log(sig[i] / sig[i + 1])
            x = denoised + math.exp(-h) * (x - uncond)
            if old_uncond is not None:
                r = math.log(sig[i - 1] / sig[i]) / h
                x = x - math.expm1(-h) / (2 * r) * (denoised - old_uncond)
        old_uncond = uncond
        notify(callback, i, n, x, denoised)
    return x
