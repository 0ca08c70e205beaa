"""Sigma schedules with explicit bounds, and the operations on a SIGMAS value.

A SIGMAS value is a 1-D float32 CPU tensor of noise levels, normally descending and ending
in 0 (``len - 1`` steps). Unlike :mod:`nodes.sampling.schedulers`, whose schedules read
their range from a model, the schedules here take ``sigma_min``/``sigma_max`` (or the
VP constants) as numbers, as ComfyUI's KarrasScheduler, ExponentialScheduler,
PolyexponentialScheduler, LaplaceScheduler and VPScheduler nodes do; each reproduces the
k-diffusion formula ComfyUI uses, including its quirks (Laplace has no final 0).

The operations never change their input: every result is a new tensor, because a cached
SIGMAS output may feed several nodes.
"""

from __future__ import annotations

import math
import re

import torch

from .noise_schedule import DiscreteSchedule

# ComfyUI's percent_to_sigma answers this for 0 % (before any step) where ours says inf:
# a FLOAT output must stay a finite JSON number.
PERCENT_ZERO_SIGMA = 999999999.9
# Laplace: keeps log(0) out of the inverse CDF at the two ends of the ramp.
LAPLACE_EPSILON = 1e-5
# ManualSigmas: the numbers in a free-form list such as "14.6, 7.0, 0" (ComfyUI's pattern:
# optional sign, digits with dots between them; an exponent is read as a separate number).
_NUMBER = re.compile(r"[-+]?(?:\d*\.*\d+)")


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 (EDM) eq. 5: evenly spaced in sigma^(1/rho); [steps + 1], ends in 0."""
    ramp = torch.linspace(0, 1, steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Evenly spaced in log(sigma) from sigma_max to sigma_min; [steps + 1], ends in 0."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def polyexponential_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """log(sigma) follows ramp^rho from log(sigma_max) to log(sigma_min) (rho = 1: exponential);
    [steps + 1], ends in 0."""
    ramp = torch.linspace(1, 0, steps) ** rho
    log_min = math.log(sigma_min)
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - log_min) + log_min))


def laplace_sigmas(steps: int, sigma_min: float, sigma_max: float, mu: float = 0.0,
                   beta: float = 0.5) -> torch.Tensor:
    """log(sigma) at evenly spaced quantiles of a Laplace(mu, beta) distribution, clamped to
    [sigma_min, sigma_max] (Tiankai et al. 2024, "Improved noise schedule for diffusion
    training"). [steps] values with NO final 0, as in ComfyUI: sampling then stops at
    sigma_min instead of denoising fully."""
    u = torch.linspace(0, 1, steps)
    centred = 0.5 - u
    log_sigma = mu - beta * torch.sign(centred) * torch.log(1 - 2 * centred.abs() + LAPLACE_EPSILON)
    return log_sigma.exp().clamp(min=sigma_min, max=sigma_max)


def vp_sigmas(steps: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> torch.Tensor:
    """The continuous variance-preserving SDE's noise levels (Song et al. 2021, "Score-Based
    Generative Modeling through SDEs", eq. 33): sigma(t) = sqrt(exp(beta_d t^2 / 2 +
    beta_min t) - 1) for t from 1 down to eps_s; [steps + 1], ends in 0."""
    t = torch.linspace(1, eps_s, steps)
    return _append_zero(torch.special.expm1(beta_d * t**2 / 2 + beta_min * t).sqrt())


def sd_turbo_sigmas(schedule: DiscreteSchedule, steps: int, denoise: float) -> torch.Tensor:
    """SDXL/SD Turbo's schedule: timesteps 999, 899, ..., 99 (ten, 100 apart), starting
    ``10 - int(10 * denoise)`` entries in, ``steps`` of them, then 0."""
    start = 10 - int(10 * denoise)
    timesteps = torch.arange(10, 0, -1, dtype=torch.float32) * 100 - 1
    return _append_zero(schedule.sigma(timesteps[start:start + steps]).float())


def basic_sigmas(schedule: DiscreteSchedule, scheduler_name: str, steps: int, denoise: float) -> torch.Tensor:
    """BasicScheduler: ``scheduler_name``'s schedule for ``steps`` steps at strength ``denoise``.

    denoise <= 0: empty. denoise < 1: the last ``steps + 1`` sigmas of a schedule for
    ``int(steps / denoise)`` steps. Unlike KSampler's planning this never drops a
    penultimate sigma (BasicScheduler does not know the sampler).
    """
    from .schedulers import get_sigmas

    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.zeros(0)
        total = int(steps / denoise)
    return get_sigmas(scheduler_name, schedule, total)[-(steps + 1):].clone()


def percent_sigma(schedule: DiscreteSchedule, percent: float, actual: bool = False) -> float:
    """The noise level a fraction ``percent`` of the way through sampling (ComfyUI's
    percent_to_sigma: 0 -> a huge value that every sigma is below, 1 -> 0). ``actual`` gives
    the model's real sigma_max / sigma_min at the two ends instead."""
    if actual and percent == 0.0:
        return schedule.sigma_max
    if actual and percent == 1.0:
        return schedule.sigma_min
    if percent <= 0.0:
        return PERCENT_ZERO_SIGMA
    return schedule.percent_to_sigma(percent)


def split_at_step(sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SplitSigmas: (sigmas[:step + 1], sigmas[step:]); the two share the sigma at ``step``,
    so sampling the first and then the second takes the same steps as the whole."""
    return sigmas[:step + 1].clone(), sigmas[step:].clone()


def split_at_denoise(sigmas: torch.Tensor, denoise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SplitSigmasDenoise: the low part holds the last ``round(steps * denoise)`` steps, the
    high part the steps before, ending at the sigma where the low part starts. As in
    ComfyUI the high part is empty when no step goes to the low part (a ``[:-0]`` slice),
    so denoise 0 gives (empty, the last sigma)."""
    steps = max(sigmas.shape[-1] - 1, 0)
    low_steps = round(steps * denoise)
    return sigmas[:-low_steps].clone(), sigmas[-(low_steps + 1):].clone()


def flip(sigmas: torch.Tensor) -> torch.Tensor:
    """FlipSigmas: the schedule reversed (for inverting an image back to noise); a leading 0
    becomes 0.0001 so that samplers never divide by it."""
    if len(sigmas) == 0:
        return sigmas.clone()
    out = sigmas.flip(0)
    if out[0] == 0:
        out[0] = 0.0001
    return out


def set_first(sigmas: torch.Tensor, sigma: float) -> torch.Tensor:
    """SetFirstSigma: a copy with the first noise level replaced by ``sigma``."""
    out = sigmas.clone()
    out[0] = sigma
    return out


def parse_manual(text: str) -> torch.Tensor:
    """ManualSigmas: every number in ``text`` in order, as float32 [N] (empty if none)."""
    return torch.tensor([float(v) for v in _NUMBER.findall(text)], dtype=torch.float32)
