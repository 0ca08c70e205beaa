"""DPM-Solver (the original, noise prediction) with its own step placement: dpm_fast and
dpm_adaptive.

Lu et al. 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling
in Around 10 Steps" (arXiv:2206.00927).  In t = lambda = -log(sigma) and with the model's
noise estimate eps = (x - D) / sigma, the singlestep solvers of orders 1-3 are Alg. 4-6
(r1 = 1/3, r2 = 2/3 for order 3; r1 = 1/2 for order 2, 1/3 inside the adaptive 2-3 pair).
These samplers do not follow the schedule's sigmas: like ComfyUI they only take its first
sigma and its last non-zero one, and end there (they do not step to sigma 0).

- dpm_fast (Alg. 4's "DPM-Solver-fast"): the schedule's step count is the number of model
  calls, spread over floor(calls / 3) + 1 equal steps in t of order 3 (the last ones of
  order 2 and 1 to use up the calls exactly).
- dpm_adaptive (Sec. 4.2, "DPM-Solver-23"): embedded orders 2 and 3 with an error estimate
  and an integral step-size controller (rtol 0.05, atol 0.0078, first step 0.05 in t);
  the step count is chosen by the controller, not by the schedule.

Progress: the callback still sees each ``i`` of the schedule's ``total = len(sigmas) - 1``
steps once, in order, as sampling passes it (model calls made for dpm_fast, distance
covered in t for dpm_adaptive), with the latest x and x0 estimate; several may come
after one solver step.  See :mod:`nodes.sampling.sampler_base`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .sampler_base import Callback, Model, NoiseSampler, batch_sigma, notify, sigma_list

Eps = Callable[[torch.Tensor, float], torch.Tensor]


def _sigma(t: float) -> float:
    return math.exp(-t)


def _first_order(eps: Eps, x: torch.Tensor, t: float, t_next: float, e0: torch.Tensor) -> torch.Tensor:
    """DPM-Solver-1 (= DDIM): x' = x - sigma' (e^h - 1) eps."""
    return x - _sigma(t_next) * math.expm1(t_next - t) * e0


def _second_order(eps: Eps, x: torch.Tensor, t: float, t_next: float, e0: torch.Tensor, r1: float,
                  cache: dict[float, torch.Tensor]) -> torch.Tensor:
    """DPM-Solver-2: one extra evaluation at t + r1 h (cached by r1 for the adaptive pair)."""
    h = t_next - t
    s1 = t + r1 * h
    if r1 not in cache:
        cache[r1] = eps(x - _sigma(s1) * math.expm1(r1 * h) * e0, s1)
    e1 = cache[r1]
    return x - _sigma(t_next) * math.expm1(h) * e0 - _sigma(t_next) / (2 * r1) * math.expm1(h) * (e1 - e0)


def _third_order(eps: Eps, x: torch.Tensor, t: float, t_next: float, e0: torch.Tensor,
                 cache: dict[float, torch.Tensor]) -> torch.Tensor:
    """DPM-Solver-3 with r1 = 1/3, r2 = 2/3."""
    r1, r2 = 1 / 3, 2 / 3
    h = t_next - t
    s1, s2 = t + r1 * h, t + r2 * h
    if r1 not in cache:
        cache[r1] = eps(x - _sigma(s1) * math.expm1(r1 * h) * e0, s1)
    e1 = cache[r1]
    u2 = (x - _sigma(s2) * math.expm1(r2 * h) * e0
          - _sigma(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (e1 - e0))
    e2 = eps(u2, s2)
    return x - _sigma(t_next) * math.expm1(h) * e0 - _sigma(t_next) / r2 * (math.expm1(h) / h - 1) * (e2 - e0)


class _Progress:
    """Reports steps ``done .. upto - 1`` of ``total`` to the callback, each once."""

    def __init__(self, callback: Callback | None, total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0

    def advance(self, upto: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        while self.done < min(upto, self.total):
            notify(self.callback, self.done, self.total, x, denoised)
            self.done += 1


def _sigma_range(sigmas: torch.Tensor) -> tuple[float, float]:
    """(first sigma, last non-zero sigma): where ComfyUI runs these solvers."""
    sig = sigma_list(sigmas)
    low = sig[-1] if sig[-1] > 0 else sig[-2]
    if low <= 0 or sig[0] <= 0:
        raise ValueError("dpm_fast / dpm_adaptive need non-zero start and end sigmas")
    return sig[0], low


def _nothing_to_solve(model: Model, x: torch.Tensor, sigma: float, callback: Callback | None,
                      total: int) -> torch.Tensor:
    """First and last non-zero sigma coincide (e.g. a one-step schedule): x stays as it is;
    one model call gives the callback its x0 estimate."""
    _Progress(callback, total).advance(total, x, model(x, batch_sigma(x, sigma)))
    return x


def _counted_eps(model: Model, like: torch.Tensor, calls: list[int]) -> Eps:
    def eps(x: torch.Tensor, t: float) -> torch.Tensor:
        calls[0] += 1
        return (x - model(x, batch_sigma(like, _sigma(t)))) / _sigma(t)

    return eps


def sample_dpm_fast(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                    noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """DPM-Solver-fast with ``len(sigmas) - 1`` model calls (see the module docstring)."""
    total = len(sigmas) - 1
    if total < 1:
        return x
    sigma_max, sigma_min = _sigma_range(sigmas)
    if sigma_max == sigma_min:
        return _nothing_to_solve(model, x, sigma_max, callback, total)
    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    m = total // 3 + 1
    orders = [3] * (m - 2) + [2, 1] if total % 3 == 0 else [3] * (m - 1) + [total % 3]
    calls = [0]
    eps = _counted_eps(model, x, calls)
    progress = _Progress(callback, total)
    for i, order in enumerate(orders):
        t, t_next = t_start + (t_end - t_start) * i / m, t_start + (t_end - t_start) * (i + 1) / m
        e0 = eps(x, t)
        denoised = x - _sigma(t) * e0
        cache: dict[float, torch.Tensor] = {}
        if order == 1:
            x = _first_order(eps, x, t, t_next, e0)
        elif order == 2:
            x = _second_order(eps, x, t, t_next, e0, 0.5, cache)
        else:
            x = _third_order(eps, x, t, t_next, e0, cache)
        progress.advance(calls[0], x, denoised)
    return x


def sample_dpm_adaptive(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                        noise_sampler: NoiseSampler | None = None, order: int = 3, rtol: float = 0.05,
                        atol: float = 0.0078, h_init: float = 0.05, accept_safety: float = 0.81,
                        max_calls: int = 10_000) -> torch.Tensor:
    """Adaptive DPM-Solver-12 (``order=2``) or -23 (``order=3``, ComfyUI's default).

    Each attempt takes an order-(k-1) and an order-k step from the same point; their
    difference, divided per element by max(atol, rtol * |x|) (|x| the larger of the
    lower-order result and the previous accepted one) and RMS-averaged, is the error.  The step in t is then
    scaled by 1 + atan(error^(-1/k) - 1) (an integral controller, limited so it cannot
    jump), and the attempt is accepted if that factor is at least ``accept_safety``.
    ``max_calls`` stops a run whose controller cannot make progress (it never should)."""
    if order not in (2, 3):
        raise ValueError("order must be 2 or 3")
    total = len(sigmas) - 1
    if total < 1:
        return x
    sigma_max, sigma_min = _sigma_range(sigmas)
    if sigma_max == sigma_min:
        return _nothing_to_solve(model, x, sigma_max, callback, total)
    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    calls = [0]
    eps = _counted_eps(model, x, calls)
    s, h, x_prev = t_start, abs(h_init), x
    progress = _Progress(callback, total)
    while s < t_end - 1e-5:
        if calls[0] >= max_calls:
            raise RuntimeError(f"dpm_adaptive made no progress in {max_calls} model calls")
        t = min(t_end, s + h)
        e0 = eps(x, s)
        denoised = x - _sigma(s) * e0
        cache: dict[float, torch.Tensor] = {}
        if order == 2:
            x_low = _first_order(eps, x, s, t, e0)
            x_high = _second_order(eps, x, s, t, e0, 0.5, cache)
        else:
            x_low = _second_order(eps, x, s, t, e0, 1 / 3, cache)
            x_high = _third_order(eps, x, s, t, e0, cache)
        scale = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        error = float(torch.linalg.norm((x_low - x_high) / scale)) / math.sqrt(x.numel())
        factor = 1 + math.atan((1 / (error + 1e-8)) ** (1 / order) - 1)
        if factor >= accept_safety:
            x_prev, x, s = x_low, x_high, t
        h *= factor
        progress.advance(math.floor((s - t_start) / (t_end - t_start) * total), x, denoised)
    progress.advance(total, x, denoised)
    return x
