"""Higher-order multistep samplers with precomputed coefficients: DEIS and UniPC.

Both integrate the probability-flow ODE in sigma units (x = x0 + sigma * eps); see
:mod:`nodes.sampling.sampler_base` for the signature and callback contract.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .sampler_base import Callback, Model, NoiseSampler, batch_sigma, notify, sigma_list

# --- DEIS ------------------------------------------------------------------------------

# DEIS's "tab" variant fits its polynomial in the time of a VP-SDE whose noise levels span
# EDM's range (sigma 0.002..80, eps_s = 1e-3); these constants define that time variable.
_EDM_SIGMA_MIN, _EDM_SIGMA_MAX, _EPS_S = 0.002, 80.0, 1e-3
_VP_BETA_D = 2 * (math.log(_EDM_SIGMA_MIN**2 + 1) / _EPS_S - math.log(_EDM_SIGMA_MAX**2 + 1)) / (_EPS_S - 1)
_VP_BETA_MIN = math.log(_EDM_SIGMA_MAX**2 + 1) - 0.5 * _VP_BETA_D


def _vp_time(sigma: np.ndarray) -> np.ndarray:
    """VP-SDE time tau in [0, 1] at which the VP process has noise level ``sigma``."""
    return (np.sqrt(_VP_BETA_MIN**2 + 2 * _VP_BETA_D * np.log(sigma**2 + 1)) - _VP_BETA_MIN) / _VP_BETA_D


def deis_coefficients(sig: list[float], max_order: int = 3, quad_points: int = 64) -> list[list[float]]:
    """Per-step weights of DEIS "tab" (Zhang & Chen 2023, "Fast Sampling of Diffusion Models
    with Exponential Integrator", arXiv:2204.13902, eq. 14).

    Over step i, eps(sigma) is replaced by the Lagrange polynomial in tau through the last
    ``order`` (tau, eps) pairs, and dx = eps dsigma is integrated exactly in that model:
    weight_j = integral from sigma_i to sigma_{i+1} of L_j(tau(sigma)) dsigma (Gauss-Legendre).
    Entry i is empty for first-order (Euler) steps.
    """
    nodes, weights = np.polynomial.legendre.leggauss(quad_points)
    coeffs: list[list[float]] = []
    for i in range(len(sig) - 1):
        order = min(i + 1, max_order)
        if order == 1 or sig[i + 1] <= 0:
            coeffs.append([])
            continue
        a, b = sig[i], sig[i + 1]
        s_q = 0.5 * (b - a) * nodes + 0.5 * (a + b)
        tau_q = _vp_time(s_q)
        tau_prev = _vp_time(np.array([sig[i - k] for k in range(order)]))
        row = []
        for j in range(order):
            basis = np.ones_like(tau_q)
            for k in range(order):
                if k != j:
                    basis *= (tau_q - tau_prev[k]) / (tau_prev[j] - tau_prev[k])
            row.append(float(0.5 * (b - a) * np.sum(weights * basis)))
        coeffs.append(row)
    return coeffs


def sample_deis(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                noise_sampler: NoiseSampler | None = None, max_order: int = 3) -> torch.Tensor:
    """DEIS multistep (tAB-DEIS, order 3 after warm-up; the step to sigma 0 is Euler).
    One model call per step."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    coeffs = deis_coefficients(sig, max_order)
    history: list[torch.Tensor] = []  # previous eps, newest last
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        d = (x - denoised) / sig[i]
        row = coeffs[i]
        if not row:
            x_next = x + (sig[i + 1] - sig[i]) * d
        else:
            x_next = x + row[0] * d + sum(c * h for c, h in zip(row[1:], reversed(history), strict=False))
        history.append(d)
        del history[: -(max_order - 1)]
        x = x_next
        notify(callback, i, n, x, denoised)
    return x


# --- UniPC -----------------------------------------------------------------------------

UNIPC_FINAL_SIGMA = 1e-3  # UniPC cannot step to sigma 0 (lambda = inf); it stops here, as ComfyUI does


def _unipc_step(model: Model, x: torch.Tensor, prev_x0: list[torch.Tensor], prev_sig: list[float],
                sigma_t: float, order: int, use_corrector: bool, variant: str
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One UniPC step from ``prev_sig[-1]`` to ``sigma_t`` (predictor UniP-p, then corrector
    UniC if asked, whose model call is returned for reuse as the next step's x0 estimate)."""
    s0, m0 = prev_sig[-1], prev_x0[-1]
    h = math.log(s0 / sigma_t)  # lambda_t - lambda_0 with lambda = -log(sigma)
    rks: list[float] = []
    diffs: list[torch.Tensor] = []
    for k in range(1, order):
        rk = math.log(s0 / prev_sig[-(k + 1)]) / h
        rks.append(rk)
        diffs.append((prev_x0[-(k + 1)] - m0) / rk)
    rks.append(1.0)
    hh = -h  # data prediction
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    rmat, bvec = [], []
    for k in range(1, order + 1):
        rmat.append([r ** (k - 1) for r in rks])
        bvec.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    rmat_np, b_np = np.array(rmat), np.array(bvec)
    x_base = (sigma_t / s0) * x - h_phi_1 * m0
    if diffs:
        rhos_p = [0.5] if order == 2 else np.linalg.solve(rmat_np[:-1, :-1], b_np[:-1]).tolist()
        x_t = x_base - b_h * sum(r * d for r, d in zip(rhos_p, diffs, strict=True))
    else:
        x_t = x_base
    if not use_corrector:
        return x_t, None
    model_t = model(x_t, batch_sigma(x, sigma_t))
    rhos_c = [0.5] if order == 1 else np.linalg.solve(rmat_np, b_np).tolist()
    corr = sum((r * d for r, d in zip(rhos_c[:-1], diffs, strict=True)), torch.zeros_like(x))
    return x_base - b_h * (corr + rhos_c[-1] * (model_t - m0)), model_t


def sample_uni_pc(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                  noise_sampler: NoiseSampler | None = None, variant: str = "bh1",
                  max_order: int = 3) -> torch.Tensor:
    """UniPC multistep predictor-corrector (Zhao et al. 2023, "UniPC: A Unified
    Predictor-Corrector Framework for Fast Sampling of Diffusion Models", arXiv:2302.04867),
    data prediction, order 3 with warm-up and lower order on the final steps.

    ``variant`` "bh1" (B(h) = h, ComfyUI's "uni_pc") or "bh2" (B(h) = e^h - 1, "uni_pc_bh2").
    A final sigma of 0 is replaced by :data:`UNIPC_FINAL_SIGMA`, so the result keeps noise of
    that (negligible) level.  One model call per step (the corrector's evaluation is reused).
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError("variant must be 'bh1' or 'bh2'")
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    if n < 1:
        return x
    if sig[-1] == 0:
        sig[-1] = UNIPC_FINAL_SIGMA
    order = max(1, min(max_order, n - 1))
    prev_x0 = [model(x, batch_sigma(x, sig[0]))]
    prev_sig = [sig[0]]
    for step in range(1, n + 1):
        step_order = step if step < order else min(order, n + 1 - step)
        use_corrector = step < n
        x, model_t = _unipc_step(model, x, prev_x0, prev_sig, sig[step], step_order, use_corrector, variant)
        if step < n:
            prev_x0.append(model_t if model_t is not None else model(x, batch_sigma(x, sig[step])))
            prev_sig.append(sig[step])
            del prev_x0[:-order], prev_sig[:-order]
        notify(callback, step - 1, n, x, prev_x0[-1])
    return x


def sample_uni_pc_bh2(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                      noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """UniPC with B(h) = e^h - 1 (ComfyUI's "uni_pc_bh2"); see :func:`sample_uni_pc`."""
    return sample_uni_pc(model, x, sigmas, callback=callback, variant="bh2")
