"""SA-Solver: stochastic Adams predictor-corrector in data prediction.

Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion
Models" (NeurIPS 2023, arXiv:2309.05019).  Over a step from lambda_s to lambda_t
(lambda = -log sigma) the SDE with noise strength tau is solved exactly in its linear
part, and D is replaced by the Lagrange polynomial through the last few x0 estimates:
    x_t = (sigma_t / sigma_s) e^(-tau^2 h) x_s + sum_k b_k D_k
          + sigma_t sqrt(1 - e^(-2 tau^2 h)) z,                       h = lambda_t - lambda_s,
    b_k = integral_s^t (1 + tau^2) e^((1 + tau^2)(lambda - lambda_t)) L_k(lambda) dlambda
(eqs. 15 and 18, alpha = 1 in sigma form).  The predictor interpolates the estimates up to
lambda_s (order 3), the corrector also the new one at lambda_t (order 4); noise is
injected only while sigma lies in the middle of the schedule (ComfyUI's default tau:
1 between the model's sigmas at 20% and 80% of sampling, else 0).
See :mod:`nodes.sampling.sampler_base` for the signature and callback contract.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .sampler_base import Callback, Model, NoiseSampler, batch_sigma, notify, require_noise, sigma_list

# sd_schedule().percent_to_sigma(0.2) and (0.8): the stochastic interval for SD1.x/SD2.x
SD_TAU_SIGMAS = (5.0924, 0.5712)


def exponential_moments(lam_s: float, lam_t: float, order: int, tau: float) -> np.ndarray:
    """I_p = (1 + tau^2) * integral from lam_s to lam_t of e^((1 + tau^2)(l - lam_t)) l^p dl
    for p = 0 .. order-1, by integration by parts:
    I_p = lam_t^p - lam_s^p e^(-(1 + tau^2) h) - p / (1 + tau^2) * I_(p-1)."""
    k = 1 + tau * tau
    decay = math.exp(-k * (lam_t - lam_s))
    moments = np.zeros(order)
    for p in range(order):
        moments[p] = lam_t**p - lam_s**p * decay - (p / k * moments[p - 1] if p else 0.0)
    return moments


def adams_coefficients(lams: list[float], lam_s: float, lam_t: float, tau: float, *, simple_order_2: bool = False,
                       corrector: bool = False) -> np.ndarray:
    """The weights b_k of the x0 estimates at ``lams`` (oldest first) for a step from
    ``lam_s`` to ``lam_t``: the moments above mapped onto the Lagrange basis (a transposed
    Vandermonde solve).  ``simple_order_2`` uses the paper's simplified two-point weights
    (App. D) instead."""
    k = 1 + tau * tau
    h = lam_t - lam_s
    if simple_order_2 and len(lams) == 2:
        whole = -math.expm1(-k * h)
        newer = 0.5 * k * h if corrector else whole - 0.5 * k * h * h / (lams[0] - lam_s)
        return np.array([whole - newer, newer])
    vander_t = np.vander(np.array(lams, dtype=np.float64), len(lams), increasing=True).T
    return np.linalg.solve(vander_t, exponential_moments(lam_s, lam_t, len(lams), tau))


def tau_interval(start_sigma: float, end_sigma: float, eta: float = 1.0) -> Callable[[float], float]:
    """ComfyUI's default noise strength for SA-Solver: ``eta`` for sigma in
    [end_sigma, start_sigma], 0 (an ODE step) elsewhere."""
    def tau(sigma: float) -> float:
        return eta if eta > 0 and start_sigma >= sigma >= end_sigma else 0.0

    return tau


def _combine(weights: np.ndarray, estimates: list[torch.Tensor]) -> torch.Tensor:
    return sum((float(w) * d for w, d in zip(weights, estimates, strict=True)), torch.zeros_like(estimates[0]))


def sample_sa_solver(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                     noise_sampler: NoiseSampler | None = None, tau_sigmas: tuple[float, float] = SD_TAU_SIGMAS,
                     eta: float = 1.0, s_noise: float = 1.0, predictor_order: int = 3, corrector_order: int = 4,
                     use_pece: bool = False, simple_order_2: bool = False) -> torch.Tensor:
    """SA-Solver (predictor order 3, corrector order 4, orders lowered at the start and,
    when sampling ends at sigma 0, towards the end).  ``tau_sigmas``: (start, end) sigmas
    of the stochastic interval; the table passes the model's sigmas at 20% and 80% of
    sampling (the default is that of the SD1.x/SD2.x schedule).  With ``use_pece`` the corrected state
    is evaluated again (PECE), two model calls per step instead of one."""
    if len(sigmas) <= 1:
        return x
    tau_of = tau_interval(tau_sigmas[0], tau_sigmas[1], eta)
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    lam = [-math.log(s) if s > 0 else math.inf for s in sig]
    needs_noise = s_noise > 0 and any(tau_of(s) > 0 for s in sig[1:] if s > 0)
    noise = require_noise(noise_sampler, "sa_solver") if needs_noise else None
    lower_to_end = sig[-1] == 0
    max_order = max(predictor_order, corrector_order)
    x_pred = x
    h, tau, step_noise = 0.0, 0.0, None
    estimates: list[torch.Tensor] = []  # x0 estimates at sig[i - len + 1 .. i], oldest first
    for i in range(n):
        denoised = model(x_pred, batch_sigma(x, sig[i]))
        estimates.append(denoised)
        del estimates[:-max_order]
        p_order = min(predictor_order, len(estimates))
        c_order = 0 if i == 0 or (sig[i + 1] == 0 and not use_pece) else min(corrector_order, len(estimates))
        if lower_to_end:  # fewer points near the end, where the steps shrink fast
            p_order = min(p_order, n - 1 - i)
            c_order = min(c_order, n - i)
        # corrector: redo the last step with the new estimate at its end among the nodes
        if c_order == 0:
            x = x_pred
        else:
            b = adams_coefficients(lam[i - c_order + 1:i + 1], lam[i - 1], lam[i], tau,
                                   simple_order_2=simple_order_2, corrector=True)
            x = (sig[i] / sig[i - 1]) * math.exp(-tau * tau * h) * x + _combine(b, estimates[-c_order:])
            if step_noise is not None:  # the same noise the predictor drew for this step
                x = x + step_noise
            if use_pece:
                denoised = model(x, batch_sigma(x, sig[i]))
                estimates[-1] = denoised
        # predictor: the next step from the estimates so far
        if sig[i + 1] == 0:
            x_pred = denoised
        else:
            tau = tau_of(sig[i + 1])
            b = adams_coefficients(lam[i - p_order + 1:i + 1], lam[i], lam[i + 1], tau,
                                   simple_order_2=simple_order_2)
            h = lam[i + 1] - lam[i]
            x_pred = (sig[i + 1] / sig[i]) * math.exp(-tau * tau * h) * x + _combine(b, estimates[-p_order:])
            step_noise = None
            if noise is not None and tau > 0:
                step_noise = noise(sig[i], sig[i + 1]) * (sig[i + 1] * math.sqrt(-math.expm1(-2 * tau * tau * h))
                                                          * s_noise)
                x_pred = x_pred + step_noise
        notify(callback, i, n, x_pred, denoised)
    return x_pred


def sample_sa_solver_pece(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                          noise_sampler: NoiseSampler | None = None, tau_sigmas: tuple[float, float] = SD_TAU_SIGMAS,
                          eta: float = 1.0, s_noise: float = 1.0, predictor_order: int = 3,
                          corrector_order: int = 4, simple_order_2: bool = False) -> torch.Tensor:
    """SA-Solver in PECE mode (Predict, Evaluate, Correct, Evaluate); see
    :func:`sample_sa_solver`."""
    return sample_sa_solver(model, x, sigmas, callback=callback, noise_sampler=noise_sampler, tau_sigmas=tau_sigmas,
                            eta=eta, s_noise=s_noise, predictor_order=predictor_order,
                            corrector_order=corrector_order, use_pece=True, simple_order_2=simple_order_2)
