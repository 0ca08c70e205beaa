"""Noise sources for sampling, all drawn from seeded CPU generators.

Drawing on the CPU and then moving to the latent's device makes a seed mean the same noise
on any device (ComfyUI's convention).  A *noise sampler* is a callable
``noise_sampler(sigma, sigma_next) -> Tensor`` returning standard normal noise shaped like
the latent, for the step from ``sigma`` to ``sigma_next``.
"""

from __future__ import annotations

import bisect
import math

import torch


def initial_noise(shape: torch.Size | tuple[int, ...], seed: int,
                  batch_index: list[int] | None = None) -> torch.Tensor:
    """The starting noise for ``seed``: ``torch.randn(shape)`` from a CPU generator
    seeded with ``seed``, float32 on the CPU (ComfyUI's ``prepare_noise`` for a batch).

    ``batch_index`` (a LATENT's, set by LatentFromBatch / RepeatLatentBatch) names the batch
    positions the items came from: one ``[1, ...]`` draw is made per position 0..max in
    turn and item i gets the draw of position ``batch_index[i]``, as ComfyUI does, so an
    image picked out of a batch keeps its noise.
    """
    generator = torch.Generator("cpu").manual_seed(int(seed))
    if batch_index is None:
        return torch.randn(tuple(shape), generator=generator)
    if len(batch_index) != shape[0] or min(batch_index, default=0) < 0:
        raise ValueError(f"batch_index {batch_index!r} does not fit a batch of {shape[0]}")
    one = (1, *tuple(shape)[1:])
    draws = [torch.randn(one, generator=generator) for _ in range(max(batch_index) + 1)]
    return torch.cat([draws[i] for i in batch_index])


class GaussianNoise:
    """Independent N(0, 1) noise per call (what ancestral samplers use).

    ``like``: a tensor giving the shape, dtype and device of the noise.  Each call draws
    ``torch.randn(like.shape)`` from one CPU generator seeded with ``seed``, so ComfyUI's
    CPU draws are reproduced exactly for the same seed.
    """

    def __init__(self, like: torch.Tensor, seed: int) -> None:
        self.shape = tuple(like.shape)
        self.dtype = like.dtype
        self.device = like.device
        self.generator = torch.Generator("cpu").manual_seed(int(seed))

    def __call__(self, sigma: float | torch.Tensor, sigma_next: float | torch.Tensor) -> torch.Tensor:
        noise = torch.randn(self.shape, generator=self.generator)
        return noise.to(device=self.device, dtype=self.dtype)


class BrownianNoise:
    """Increments of one Brownian motion W(s) indexed by sigma, sampled exactly and lazily.

    ``__call__(a, b)`` returns ``(W(b) - W(a)) / sqrt(|b - a|)``, standard normal, and calls
    over overlapping intervals are correlated the way Brownian increments are, which SDE
    solvers that sub-step (``dpmpp_sde``) rely on.  New points between known ones are filled
    in by Brownian-bridge sampling, points outside by independent increments.  Points above
    the current interval are forgotten, since samplers only move to lower sigma.
    This plays the role of k-diffusion's ``BrownianTreeNoiseSampler`` (the numbers differ).
    """

    def __init__(self, like: torch.Tensor, seed: int) -> None:
        self.shape = tuple(like.shape)
        self.dtype = like.dtype
        self.device = like.device
        self.generator = torch.Generator("cpu").manual_seed(int(seed))
        self._times: list[float] = []
        self._values: list[torch.Tensor] = []

    def _randn(self) -> torch.Tensor:
        return torch.randn(self.shape, generator=self.generator, dtype=torch.float64)

    def _value(self, s: float) -> torch.Tensor:
        times, values = self._times, self._values
        if not times:
            times.append(s)
            values.append(torch.zeros(self.shape, dtype=torch.float64))
            return values[0]
        k = bisect.bisect_left(times, s)
        if k < len(times) and times[k] == s:
            return values[k]
        if k == 0:
            w = values[0] + math.sqrt(times[0] - s) * self._randn()
        elif k == len(times):
            w = values[-1] + math.sqrt(s - times[-1]) * self._randn()
        else:
            lo, hi = times[k - 1], times[k]
            frac = (s - lo) / (hi - lo)
            mean = values[k - 1] + frac * (values[k] - values[k - 1])
            w = mean + math.sqrt((s - lo) * (hi - s) / (hi - lo)) * self._randn()
        times.insert(k, s)
        values.insert(k, w)
        return w

    def __call__(self, sigma: float | torch.Tensor, sigma_next: float | torch.Tensor) -> torch.Tensor:
        a, b = float(sigma), float(sigma_next)
        if a == b:
            return torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        top = max(a, b)
        keep = bisect.bisect_right(self._times, top)
        # forget points above this interval, but keep the one just above as an anchor
        if keep < len(self._times) - 1:
            del self._times[keep + 1 :], self._values[keep + 1 :]
        increment = (self._value(b) - self._value(a)) / math.sqrt(abs(b - a))
        return increment.to(device=self.device, dtype=self.dtype)
