"""Classic ODE/SDE samplers over a sigma schedule (k-diffusion's formulation).

All work in the sigma parameterisation x = x0 + sigma * eps, where the probability-flow
ODE is dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, "Elucidating the Design
Space of Diffusion-Based Generative Models", eq. 3 with sigma(t) = t).  See
:mod:`nodes.sampling.sampler_base` for the shared signature and callback contract.
"""

from __future__ import annotations

import math

import numpy as np
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


def _to_d(x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
    """ODE derivative dx/dsigma = (x - denoised) / sigma."""
    return (x - denoised) / sigma


def sample_euler(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                 noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 1 without churn).
    One model call per step."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        x = x + _to_d(x, sig[i], denoised) * (sig[i + 1] - sig[i])
        notify(callback, i, n, x, denoised)
    return x


def sample_ddim(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Deterministic DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12,
    eta = 0).  In sigma units the DDIM update x' = D + sigma' * (x - D) / sigma is exactly an
    Euler step of the probability-flow ODE, which is also how ComfyUI serves "ddim"."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        eps = (x - denoised) / sig[i]
        x = denoised + sig[i + 1] * eps
        notify(callback, i, n, x, denoised)
    return x


def sample_euler_ancestral(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *,
                           callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
                           eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral Euler: an Euler step down to sigma_down, then fresh noise of std sigma_up
    (k-diffusion's ``sample_euler_ancestral``).  One model call per step."""
    noise = require_noise(noise_sampler, "euler_ancestral")
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        down, up = ancestral_step(sig[i], sig[i + 1], eta)
        x = x + _to_d(x, sig[i], denoised) * (down - sig[i])
        if sig[i + 1] > 0:
            x = x + noise(sig[i], sig[i + 1]) * s_noise * up
        notify(callback, i, n, x, denoised)
    return x


def sample_heun(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Alg. 1): Euler predictor, trapezoidal
    corrector; the last step (to sigma 0) is plain Euler.  Two model calls per step."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        d = _to_d(x, sig[i], denoised)
        dt = sig[i + 1] - sig[i]
        if sig[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, sig[i + 1], model(x_2, batch_sigma(x, sig[i + 1])))
            x = x + (d + d_2) / 2 * dt
        notify(callback, i, n, x, denoised)
    return x


def _log_midpoint(a: float, b: float) -> float:
    """Geometric mean of two sigmas (the midpoint in log-sigma)."""
    return math.exp(0.5 * (math.log(a) + math.log(b)))


def sample_dpm_2(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                 noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """DPM-Solver-2 in k-diffusion's form (Lu et al. 2022, "DPM-Solver", Alg. 1 read as a
    midpoint method in sigma): evaluate at the log-sigma midpoint, step with that slope.
    Last step is Euler.  Two model calls per step."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        d = _to_d(x, sig[i], denoised)
        if sig[i + 1] == 0:
            x = x + d * (sig[i + 1] - sig[i])
        else:
            mid = _log_midpoint(sig[i], sig[i + 1])
            x_2 = x + d * (mid - sig[i])
            d_2 = _to_d(x_2, mid, model(x_2, batch_sigma(x, mid)))
            x = x + d_2 * (sig[i + 1] - sig[i])
        notify(callback, i, n, x, denoised)
    return x


def sample_dpm_2_ancestral(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *,
                           callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
                           eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver-2: the midpoint step goes to sigma_down, then noise of std
    sigma_up is added.  Two model calls per step (one on the last)."""
    noise = require_noise(noise_sampler, "dpm_2_ancestral")
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        down, up = ancestral_step(sig[i], sig[i + 1], eta)
        d = _to_d(x, sig[i], denoised)
        if down == 0:
            x = x + d * (down - sig[i])
        else:
            mid = _log_midpoint(sig[i], down)
            x_2 = x + d * (mid - sig[i])
            d_2 = _to_d(x_2, mid, model(x_2, batch_sigma(x, mid)))
            x = x + d_2 * (down - sig[i])
            x = x + noise(sig[i], sig[i + 1]) * s_noise * up
        notify(callback, i, n, x, denoised)
    return x


def lms_coefficient(sig: list[float], i: int, order: int, j: int) -> float:
    """Weight of the derivative at ``sig[i - j]`` in a linear multistep step from ``sig[i]``
    to ``sig[i + 1]``: the integral over that interval of the Lagrange basis polynomial
    through ``sig[i], ..., sig[i - order + 1]`` that is 1 at ``sig[i - j]`` (exact)."""
    nodes = [sig[i - k] for k in range(order) if k != j]
    poly = np.polynomial.Polynomial.fromroots(nodes) if nodes else np.polynomial.Polynomial([1.0])
    poly = poly / float(np.prod([sig[i - j] - t for t in nodes])) if nodes else poly
    antiderivative = poly.integ()
    return float(antiderivative(sig[i + 1]) - antiderivative(sig[i]))


def sample_lms(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
               noise_sampler: NoiseSampler | None = None, order: int = 4) -> torch.Tensor:
    """Linear multistep (Adams-Bashforth with variable steps, order 4) on the ODE in sigma,
    as in k-diffusion's ``sample_lms``; a final step to sigma 0 returns the x0 estimate, as
    ComfyUI's does (rather than extrapolating the polynomial there).  One model call per step."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    history: list[torch.Tensor] = []
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        history.append(_to_d(x, sig[i], denoised))
        del history[:-order]
        if sig[i + 1] == 0:
            x = denoised
        else:
            cur_order = min(i + 1, order)
            coeffs = [lms_coefficient(sig, i, cur_order, j) for j in range(cur_order)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(history), strict=False))
        notify(callback, i, n, x, denoised)
    return x


def sample_ipndm(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                 noise_sampler: NoiseSampler | None = None, max_order: int = 4) -> torch.Tensor:
    """Improved pseudo-numerical method (iPNDM; Zhang & Chen 2023, "Fast Sampling of Diffusion
    Models with Exponential Integrator", App. on PNDM): Adams-Bashforth with fixed-step
    coefficients (orders 1-4, warming up) on dx/dsigma.  The final step to sigma 0 returns
    the denoised estimate.  One model call per step."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    ab = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
    history: list[torch.Tensor] = []  # newest last
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        d = _to_d(x, sig[i], denoised)
        if sig[i + 1] == 0:
            x_next = denoised
        else:
            weights = ab[min(max_order, i + 1)]
            slope = weights[0] * d + sum(w * h for w, h in zip(weights[1:], reversed(history), strict=False))
            x_next = x + (sig[i + 1] - sig[i]) * slope
        history.append(d)
        del history[: -(max_order - 1)]
        x = x_next
        notify(callback, i, n, x, denoised)
    return x


def sample_ddpm(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic Models",
    Alg. 2) between arbitrary noise levels: move to the variance-preserving scale
    (alpha_bar = 1 / (1 + sigma^2)), take the posterior-mean step with the model's eps plus
    posterior noise, and scale back.  One model call per step."""
    noise = require_noise(noise_sampler, "ddpm")
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    for i in range(n):
        s, s_next = sig[i], sig[i + 1]
        denoised = model(x, batch_sigma(x, s))
        eps = (x - denoised) / s
        abar, abar_next = 1 / (s * s + 1), 1 / (s_next * s_next + 1)
        alpha = abar / abar_next
        x_vp = x / math.sqrt(1 + s * s)
        x_vp = (x_vp - (1 - alpha) * eps / math.sqrt(1 - abar)) / math.sqrt(alpha)
        if s_next > 0:
            x_vp = x_vp + math.sqrt((1 - alpha) * (1 - abar_next) / (1 - abar)) * noise(s, s_next)
            x = x_vp * math.sqrt(1 + s_next * s_next)
        else:
            x = x_vp
        notify(callback, i, n, x, denoised)
    return x


def sample_lcm(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
               noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Latent Consistency Model multistep sampling (Luo et al. 2023, "Latent Consistency
    Models", Alg. 1): jump to the x0 estimate, then re-noise it to the next sigma with fresh
    noise.  One model call per step."""
    noise = require_noise(noise_sampler, "lcm")
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        x = denoised
        if sig[i + 1] > 0:
            x = x + sig[i + 1] * noise(sig[i], sig[i + 1])
        notify(callback, i, n, x, denoised)
    return x
