"""Sigma schedules by ComfyUI scheduler name.

Each scheduler turns a model's :class:`~nodes.sampling.noise_schedule.DiscreteSchedule` and a step
count into a descending float32 tensor of sigmas that ends in 0.  For ``steps`` steps this is
``steps + 1`` values, except where ComfyUI's own definition gives another length
(``ddim_uniform`` when the table size is not a multiple of ``steps``, and ``beta`` when
rounding makes two timesteps coincide); those quirks are kept on purpose so that a workflow
means the same thing here as in ComfyUI.

Sigmas are in the model's noise units (x = x0 + sigma * eps), e.g. 14.61..0.0292 for SD.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from nodes.ksampler import SCHEDULER_NAMES

from .noise_schedule import DiscreteSchedule
from .special import beta_ppf

SchedulerFn = Callable[[DiscreteSchedule, int], torch.Tensor]


def _check_steps(steps: int) -> None:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")


def _with_zero(values: torch.Tensor) -> torch.Tensor:
    return torch.cat([values.float(), values.new_zeros(1, dtype=torch.float32)])


def normal(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Timesteps evenly spaced from the last (N-1) to the first (0), then 0.

    Fractional timesteps are turned into sigmas by log-sigma interpolation.
    """
    _check_steps(steps)
    start = float(schedule.timestep(schedule.sigma_max))
    end = float(schedule.timestep(schedule.sigma_min))
    if math.isclose(float(schedule.sigma(end)), 0.0, abs_tol=1e-5):
        # a table that already reaches sigma 0 supplies the final 0 itself
        return schedule.sigma(torch.linspace(start, end, steps + 1)).float()
    return _with_zero(schedule.sigma(torch.linspace(start, end, steps)))


def sgm_uniform(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Like ``normal`` but over ``steps + 1`` evenly spaced timesteps, dropping the last one
    (Stability's SGM "uniform" discretisation), then 0."""
    _check_steps(steps)
    start = float(schedule.timestep(schedule.sigma_max))
    end = float(schedule.timestep(schedule.sigma_min))
    return _with_zero(schedule.sigma(torch.linspace(start, end, steps + 1)[:-1]))


def karras(schedule: DiscreteSchedule, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 (EDM), eq. 5: sigmas evenly spaced in sigma^(1/rho), rho = 7."""
    _check_steps(steps)
    ramp = torch.linspace(0, 1, steps)
    lo, hi = schedule.sigma_min ** (1 / rho), schedule.sigma_max ** (1 / rho)
    return _with_zero((hi + ramp * (lo - hi)) ** rho)


def exponential(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Sigmas evenly spaced in log(sigma) from sigma_max to sigma_min."""
    _check_steps(steps)
    return _with_zero(torch.linspace(math.log(schedule.sigma_max), math.log(schedule.sigma_min), steps).exp())


def simple(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Every (N/steps)-th entry of the sigma table, counted down from the top, then 0."""
    _check_steps(steps)
    n = schedule.num_timesteps
    stride = n / steps
    picks = [schedule.sigmas[-(1 + int(i * stride))] for i in range(steps)]
    return _with_zero(torch.stack(picks))


def ddim_uniform(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """DDIM's uniform timestep skipping: table entries 1, 1+k, 1+2k, ... (k = N // steps),
    reversed, then 0.  Gives ``ceil((N-1)/k)`` steps, which is ``steps`` only when k divides
    N - 1 closely enough (as in ComfyUI)."""
    _check_steps(steps)
    n = schedule.num_timesteps
    first = 1
    if math.isclose(float(schedule.sigmas[first]), 0.0, abs_tol=1e-5):
        steps += 1
        tail: list[float] = []
    else:
        tail = [0.0]
    stride = max(n // steps, 1)
    picks = [float(schedule.sigmas[i]) for i in range(first, n, stride)]
    return torch.tensor(picks[::-1] + tail, dtype=torch.float32)


def beta(schedule: DiscreteSchedule, steps: int, alpha: float = 0.6, beta_param: float = 0.6) -> torch.Tensor:
    """Timesteps at quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024,
    "Beta sampling is all you need", arXiv:2407.12173), rounded to table entries; repeated
    timesteps are dropped (so a large ``steps`` can give fewer steps), then 0."""
    _check_steps(steps)
    last = schedule.num_timesteps - 1
    sigmas: list[float] = []
    previous = None
    for i in range(steps):
        q = 1.0 - i / steps
        # the quantile is accurate to ~1e-12: round it there so that exact halves (e.g. the
        # median of a symmetric Beta) do not flip on float noise; round-half-even like numpy.rint
        t = round(round(beta_ppf(q, alpha, beta_param), 12) * last)
        if t != previous:
            sigmas.append(float(schedule.sigmas[int(t)]))
        previous = t
    return torch.tensor(sigmas + [0.0], dtype=torch.float32)


def linear_quadratic(schedule: DiscreteSchedule, steps: int, threshold_noise: float = 0.025) -> torch.Tensor:
    """Genmo's Mochi schedule: the first half of the steps lowers a unit noise level
    linearly to ``1 - threshold_noise``, the rest follow a quadratic down to 0; the unit
    schedule is then multiplied by sigma_max."""
    _check_steps(steps)
    if steps == 1:
        unit = [1.0, 0.0]
    else:
        lin_steps = steps // 2
        quad_steps = steps - lin_steps
        linear = [i * threshold_noise / lin_steps for i in range(lin_steps)]
        diff = lin_steps - threshold_noise * steps
        quad_coef = diff / (lin_steps * quad_steps**2)
        lin_coef = threshold_noise / lin_steps - 2 * diff / quad_steps**2
        const = quad_coef * lin_steps**2
        quadratic = [quad_coef * i**2 + lin_coef * i + const for i in range(lin_steps, steps)]
        unit = [1.0 - v for v in linear + quadratic + [1.0]]
    return torch.tensor(unit, dtype=torch.float32) * schedule.sigma_max


def kl_optimal(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """"KL-optimal" schedule (Sabour et al. 2024, "Align your steps", eq. 11): evenly spaced
    in arctan(sigma) from sigma_max to sigma_min, then 0.  One step gives [sigma_max, 0]."""
    _check_steps(steps)
    if steps == 1:
        return torch.tensor([schedule.sigma_max, 0.0], dtype=torch.float32)
    frac = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    angles = frac * math.atan(schedule.sigma_min) + (1 - frac) * math.atan(schedule.sigma_max)
    return _with_zero(angles.tan())


# ComfyUI's scheduler names are declared once, torch-free, in nodes/ksampler.py; each is
# served by the function of that name above (a name without one fails this import).
SCHEDULERS: dict[str, SchedulerFn] = {name: globals()[name] for name in SCHEDULER_NAMES}


def get_sigmas(scheduler_name: str, schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Sigmas (float32, descending, ending in 0) for ComfyUI scheduler ``scheduler_name``.

    Raises ``ValueError`` for a name not in :data:`SCHEDULER_NAMES`.
    """
    try:
        fn = SCHEDULERS[scheduler_name]
    except KeyError:
        raise ValueError(
            f"unknown scheduler {scheduler_name!r}; available: {', '.join(SCHEDULER_NAMES)}"
        ) from None
    return fn(schedule, steps)
