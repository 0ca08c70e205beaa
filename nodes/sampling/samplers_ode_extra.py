"""More ODE samplers in sigma: Heun++ (heunpp2) and variable-step iPNDM (ipndm_v).

Both integrate the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma (see
:mod:`nodes.sampling.samplers_classic`).  See :mod:`nodes.sampling.sampler_base` for the
signature and callback contract.
"""

from __future__ import annotations

import torch

from .sampler_base import Callback, Model, NoiseSampler, batch_sigma, notify, sigma_list


def _slope(model: Model, x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx/dsigma, D) at (x, sigma)."""
    denoised = model(x, batch_sigma(x, sigma))
    return (x - denoised) / sigma, denoised


def sample_heunpp2(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                   noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Heun++ (ComfyUI's ``heunpp2``, from the sd-webui-samplers-scheduler extension): Euler
    predictors to the next one or two sigmas, and the step taken with a weighted mean of
    the slopes there, the later slopes weighted by sigma / (k * sigmas[0]) (k = 2 or 3
    points; sigmas[0] is where this run starts, sigma_max for txt2img).  The weights shrink with sigma, so late steps are nearly Euler and the method
    is first order; the last step is Euler.  Up to three model calls per step."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    s_end, k_scale = sig[-1], sig[0]
    for i in range(n):
        d, denoised = _slope(model, x, sig[i])
        dt = sig[i + 1] - sig[i]
        if sig[i + 1] == s_end:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2, _ = _slope(model, x_2, sig[i + 1])
            if sig[i + 2] == s_end:
                w2 = sig[i + 1] / (2 * k_scale)
                x = x + ((1 - w2) * d + w2 * d_2) * dt
            else:
                x_3 = x_2 + d_2 * (sig[i + 2] - sig[i + 1])
                d_3, _ = _slope(model, x_3, sig[i + 2])
                w2, w3 = sig[i + 1] / (3 * k_scale), sig[i + 2] / (3 * k_scale)
                x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
        notify(callback, i, n, x, denoised)
    return x


def ipndm_v_weights(sig: list[float], i: int, order: int) -> list[float]:
    """Weights of the slopes at sig[i], sig[i-1], ... in iPNDM's variable-step
    Adams-Bashforth step from sig[i] to sig[i+1] (Zhang & Chen 2023, arXiv:2204.13902;
    the ``diff-solvers`` formulas ComfyUI uses).  h, h1, h2, h3 are the current and the
    three previous step sizes in sigma."""
    if order == 1:
        return [1.0]
    h, h1 = sig[i + 1] - sig[i], sig[i] - sig[i - 1]
    w = [(2 + h / h1) / 2, -(h / h1) / 2]
    if order == 2:
        return w
    h2 = sig[i - 1] - sig[i - 2]
    t1 = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return [w[0] + t1, w[1] - (1 + h1 / h2) * t1, t1 * h1 / h2]
    h3 = sig[i - 2] - sig[i - 3]
    t2 = (((1 - h / (3 * (h + h1))) / 2 + (1 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2)))
          * (h * (h + h1) * (h + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3)))
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return [w[0] + t1 + t2,
            w[1] - (1 + h1 / h2) * t1 - (1 + h1 / h2 + q) * t2,
            t1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * t2,
            -t2 * q * h1 / h2]


def sample_ipndm_v(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                   noise_sampler: NoiseSampler | None = None, max_order: int = 4) -> torch.Tensor:
    """iPNDM with variable-step coefficients (orders 1-4, warming up): unlike ``ipndm``'s
    fixed Adams-Bashforth weights, the weights follow the actual sigma spacing.  The step
    to sigma 0 returns the denoised estimate.  One model call per step."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    history: list[torch.Tensor] = []  # previous slopes, newest last
    for i in range(n):
        d, denoised = _slope(model, x, sig[i])
        if sig[i + 1] == 0:
            x_next = denoised
        else:
            weights = ipndm_v_weights(sig, i, min(max_order, i + 1))
            slope = weights[0] * d + sum(w * s for w, s in zip(weights[1:], reversed(history), strict=False))
            x_next = x + (sig[i + 1] - sig[i]) * slope
        history.append(d)
        del history[: -(max_order - 1)]
        x = x_next
        notify(callback, i, n, x, denoised)
    return x
