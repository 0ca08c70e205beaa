"""More SDE solvers in data prediction: ER-SDE, SEEDS-2/3, DPM-Solver++(2M) SDE (Heun).

All are written for the variance-exploding sigma parameterisation our models use
(x = x0 + sigma * eps, alpha = 1), with lambda = -log(sigma).  Noise: ER-SDE and SEEDS draw
independent N(0, 1) per call (ComfyUI's default noise sampler); the (2M) SDE Heun variant
uses the Brownian path like the other DPM-Solver++ SDE samplers.
See :mod:`nodes.sampling.sampler_base` for the signature and callback contract.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .sampler_base import Callback, Model, NoiseSampler, batch_sigma, notify, require_noise, sigma_list
from .samplers_dpmpp import sample_dpmpp_2m_sde


def sample_dpmpp_2m_sde_heun(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *,
                             callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
                             eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(2M) SDE with the Heun-type second-order term
    ((phi / -h_eta + 1) / r instead of the midpoint's phi / (2r))."""
    return sample_dpmpp_2m_sde(model, x, sigmas, callback=callback, noise_sampler=noise_sampler, eta=eta,
                               s_noise=s_noise, solver_type="heun")


# --- ER-SDE ----------------------------------------------------------------------------

ER_SDE_INTEGRATION_POINTS = 200  # ComfyUI's Riemann sum for the stage-2/3 integrals


def er_sde_noise_scaler(lam: np.ndarray | float) -> np.ndarray | float:
    """The default noise scale function of ER-SDE-Solver-3 (the paper's "ER-SDE 5"):
    f(lambda) = lambda * (e^(lambda^0.3) + 10), with lambda = sigma in VE form."""
    return lam * (np.exp(np.power(lam, 0.3)) + 10.0)


def _reverse_time_scaler(eta: float) -> Callable[[np.ndarray], np.ndarray]:
    """f(s) = s^(eta + 1): the reverse-time SDE family of noise scale functions (eta 0: the ODE)."""
    return lambda lam: np.power(lam, eta + 1.0)


def sample_er_sde(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                  noise_sampler: NoiseSampler | None = None, s_noise: float = 1.0, max_stage: int = 3,
                  noise_scaler: Callable[[np.ndarray], np.ndarray] = er_sde_noise_scaler,
                  reverse_time_eta: float | None = None) -> torch.Tensor:
    """Extended Reverse-time SDE solver, VP ER-SDE-Solver-3 (Cui et al. 2023, "Elucidating the
    solution space of extended reverse-time SDE for diffusion models", arXiv:2309.06169,
    eqs. 17-19) in sigma form.  With r = f(sigma_next) / f(sigma) the first-order step is
        x' = r x + (1 - r) D  +  sqrt(sigma_next^2 - r^2 sigma^2) * z,
    and stages 2-3 add divided differences of D weighted by integrals of 1/f (a left Riemann
    sum of 200 points, as ComfyUI).  The step to sigma 0 returns D.  One model call per step.
    ``noise_scaler`` is f (elementwise on arrays of sigmas): e.g. f(s) = s^(eta + 1) for the
    paper's reverse-time SDE family, f(s) = s for the ODE (then pass ``s_noise=0``).
    ``reverse_time_eta`` picks that family's f by its eta (SamplerER_SDE's "Reverse-time SDE"
    and "ODE" types) in place of ``noise_scaler``.
    """
    if reverse_time_eta is not None:
        noise_scaler = _reverse_time_scaler(reverse_time_eta)
    noise = require_noise(noise_sampler, "er_sde") if s_noise > 0 else None
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    points = np.arange(ER_SDE_INTEGRATION_POINTS, dtype=np.float64)
    old_denoised: torch.Tensor | None = None
    old_denoised_d: torch.Tensor | None = None
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        stage = min(max_stage, i + 1)
        if sig[i + 1] == 0:
            x = denoised
        else:
            s, t = sig[i], sig[i + 1]
            f_t = float(noise_scaler(np.float64(t)))
            r = f_t / float(noise_scaler(np.float64(s)))
            x = r * x + (1 - r) * denoised
            if stage >= 2:
                assert old_denoised is not None
                dt = t - s
                step = -dt / ER_SDE_INTEGRATION_POINTS
                pos = t + points * step  # from sigma_next up towards sigma
                scaled = noise_scaler(pos)
                integral_1 = float(np.sum(1 / scaled) * step)
                denoised_d = (denoised - old_denoised) / (s - sig[i - 1])
                x = x + (dt + integral_1 * f_t) * denoised_d
                if stage >= 3:
                    assert old_denoised_d is not None
                    integral_u = float(np.sum((pos - s) / scaled) * step)
                    denoised_u = (denoised_d - old_denoised_d) / ((s - sig[i - 2]) / 2)
                    x = x + (dt * dt / 2 + integral_u * f_t) * denoised_u
                old_denoised_d = denoised_d
            if noise is not None:
                # r^2 s^2 may exceed t^2 by rounding; ComfyUI turns the NaN into 0
                x = x + noise(s, t) * s_noise * math.sqrt(max(t * t - s * s * r * r, 0.0))
        old_denoised = denoised
        notify(callback, i, n, x, denoised)
    return x


# --- SEEDS -----------------------------------------------------------------------------

def _h_phi_1(z: float) -> float:
    """z * phi_1(z) = e^z - 1."""
    return math.expm1(z)


def _h_phi_2(z: float) -> float:
    """z * phi_2(z) = (e^z - 1 - z) / z."""
    return (math.expm1(z) - z) / z


class _SeedsNoise:
    """The SDE noise of one SEEDS step, built up stage by stage: at each stage the noise
    carried so far decays by e^(-eta * dlambda) and a fresh independent part of variance
    1 - e^(-2 eta dlambda) joins, so the final draw is the exact Ornstein-Uhlenbeck noise of
    the whole step, correlated with the partial draws the inner stages used."""

    def __init__(self, noise: NoiseSampler | None, eta: float) -> None:
        self.noise, self.eta, self.value = noise, eta, None

    def advance(self, s_from: float, s_to: float, h_part: float) -> torch.Tensor | None:
        if self.noise is None:
            return None
        fresh = self.noise(s_from, s_to) * math.sqrt(-math.expm1(-2 * self.eta * h_part))
        self.value = fresh if self.value is None else self.value * math.exp(-self.eta * h_part) + fresh
        return self.value


def sample_seeds_2(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                   noise_sampler: NoiseSampler | None = None, eta: float = 1.0, s_noise: float = 1.0,
                   r: float = 0.5, solver_type: str = "phi_1") -> torch.Tensor:
    """SEEDS-2 (Gonzalez et al. 2023, "SEEDS: Exponential SDE Solvers for Fast High-Quality
    Sampling from Diffusion Models", arXiv:2305.14267), data prediction: an SDE sub-step to
    lambda + r*h, then the full step with the two estimates combined ("phi_1": D blended
    by 1/(2r) as in DPM-Solver++ SDE; "phi_2": phi_2-weighted).  The exponential decay of x
    is e^(-h eta) and the x0 weight uses h (1 + eta).  Two model calls per step (one on the
    last, which returns D)."""
    if solver_type not in ("phi_1", "phi_2"):
        raise ValueError("solver_type must be 'phi_1' or 'phi_2'")
    inject = eta > 0 and s_noise > 0
    noise = require_noise(noise_sampler, "seeds_2") if inject else None
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    fac = 1 / (2 * r)
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        if sig[i + 1] == 0:
            x = denoised
        else:
            s, t = sig[i], sig[i + 1]
            h = math.log(s / t)
            h_eta = h * (eta + 1)
            s_1 = s * math.exp(-r * h)
            sde = _SeedsNoise(noise, eta)
            x_2 = (s_1 / s) * math.exp(-r * h * eta) * x - _h_phi_1(-r * h_eta) * denoised
            z = sde.advance(s, s_1, r * h)
            if z is not None:
                x_2 = x_2 + z * s_1 * s_noise
            denoised_2 = model(x_2, batch_sigma(x, s_1))
            if solver_type == "phi_1":
                x0_term = _h_phi_1(-h_eta) * (denoised + fac * (denoised_2 - denoised))
            else:
                b2 = _h_phi_2(-h_eta) / r
                x0_term = (_h_phi_1(-h_eta) - b2) * denoised + b2 * denoised_2
            x = (t / s) * math.exp(-h * eta) * x - x0_term
            z = sde.advance(s_1, t, (1 - r) * h)
            if z is not None:
                x = x + z * t * s_noise
        notify(callback, i, n, x, denoised)
    return x


def sample_seeds_3(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                   noise_sampler: NoiseSampler | None = None, eta: float = 1.0, s_noise: float = 1.0,
                   r_1: float = 1 / 3, r_2: float = 2 / 3) -> torch.Tensor:
    """SEEDS-3 (same paper), data prediction: sub-steps to lambda + r_1 h and lambda + r_2 h,
    then the full step with phi_2-weighted combinations of the estimates.  Three model
    calls per step (one on the last, which returns D)."""
    inject = eta > 0 and s_noise > 0
    noise = require_noise(noise_sampler, "seeds_3") if inject else None
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    for i in range(n):
        denoised = model(x, batch_sigma(x, sig[i]))
        if sig[i + 1] == 0:
            x = denoised
        else:
            s, t = sig[i], sig[i + 1]
            h = math.log(s / t)
            h_eta = h * (eta + 1)
            s_1, s_2 = s * math.exp(-r_1 * h), s * math.exp(-r_2 * h)
            sde = _SeedsNoise(noise, eta)
            x_2 = (s_1 / s) * math.exp(-r_1 * h * eta) * x - _h_phi_1(-r_1 * h_eta) * denoised
            z = sde.advance(s, s_1, r_1 * h)
            if z is not None:
                x_2 = x_2 + z * s_1 * s_noise
            denoised_2 = model(x_2, batch_sigma(x, s_1))
            a3_2 = r_2 / r_1 * _h_phi_2(-r_2 * h_eta)
            a3_1 = _h_phi_1(-r_2 * h_eta) - a3_2
            x_3 = (s_2 / s) * math.exp(-r_2 * h * eta) * x - (a3_1 * denoised + a3_2 * denoised_2)
            z = sde.advance(s_1, s_2, (r_2 - r_1) * h)
            if z is not None:
                x_3 = x_3 + z * s_2 * s_noise
            denoised_3 = model(x_3, batch_sigma(x, s_2))
            b3 = _h_phi_2(-h_eta) / r_2
            b1 = _h_phi_1(-h_eta) - b3
            x = (t / s) * math.exp(-h * eta) * x - (b1 * denoised + b3 * denoised_3)
            z = sde.advance(s_2, t, (1 - r_2) * h)
            if z is not None:
                x = x + z * t * s_noise
        notify(callback, i, n, x, denoised)
    return x
