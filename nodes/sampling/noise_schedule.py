"""A model's discrete noise schedule, seen as k-diffusion sigmas.

A DDPM-style model is trained on N discrete timesteps t = 0..N-1 with betas beta_t and
alphas_cumprod abar_t = prod_{s<=t} (1 - beta_s).  In the "sigma" (variance exploding) view
used by every sampler here, a noisy latent is x = x0 + sigma * eps with

    sigma_t = sqrt((1 - abar_t) / abar_t)          (dimensionless, increasing in t)

and the UNet sees the variance-preserving input x / sqrt(sigma^2 + 1).

This module turns betas into that sigma table and maps between sigma and (fractional)
timestep.  Nothing here is specific to one checkpoint: SD1.x/SD2.x/SDXL all use the
"scaled linear" betas from 0.00085 to 0.012 over 1000 steps, which
:func:`scaled_linear_betas` builds, but any betas can be passed in.
"""

from __future__ import annotations

import torch

# The stand-in for alpha-bar 0 at the last timestep of a zero-terminal-SNR schedule (the
# value ComfyUI uses): sigma_max becomes about 4518.8 instead of infinity, so samplers that
# divide by sigma or take log(sigma) stay finite.
ZSNR_TERMINAL_ALPHA_CUMPROD = 4.8973451890853435e-08


def scaled_linear_betas(num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """Stable Diffusion's betas: linear in sqrt(beta) from ``beta_start`` to ``beta_end``.

    Returns a float64 tensor of shape [num_steps].
    """
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2


class DiscreteSchedule:
    """The sigma table of a discrete-time diffusion model.

    ``sigmas`` is float32 [N], ascending (index = training timestep), as ComfyUI keeps it.
    """

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if abar.ndim != 1 or abar.numel() < 2:
            raise ValueError("alphas_cumprod must be a 1-D tensor with at least 2 entries")
        self.alphas_cumprod = abar
        self.sigmas = ((1 - abar) / abar).sqrt().float()
        self.log_sigmas = self.sigmas.log()

    def with_zero_terminal_snr(self) -> DiscreteSchedule:
        """This schedule rescaled to zero terminal SNR (:func:`zero_terminal_snr`), with the
        last alpha-bar set to ``ZSNR_TERMINAL_ALPHA_CUMPROD`` so that sigma_max is finite."""
        abar = zero_terminal_snr(self.alphas_cumprod)
        abar[-1] = ZSNR_TERMINAL_ALPHA_CUMPROD
        return DiscreteSchedule(abar)

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> DiscreteSchedule:
        """Build from betas [N] (any float dtype; accumulated in float64)."""
        betas = torch.as_tensor(betas, dtype=torch.float64)
        return cls(torch.cumprod(1.0 - betas, dim=0))

    @property
    def num_timesteps(self) -> int:
        return int(self.sigmas.numel())

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma(self, timestep: torch.Tensor | float) -> torch.Tensor:
        """Sigma at a (fractional) timestep, interpolating log-sigma linearly between entries.

        ``timestep`` is clamped to [0, N-1]; returns float32 of the same shape.
        """
        t = torch.as_tensor(timestep, dtype=torch.float32).clamp(0, self.num_timesteps - 1)
        low = t.floor().long()
        high = t.ceil().long()
        w = t - low.float()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def percent_to_sigma(self, percent: float) -> float:
        """The noise level at a fraction of the way through sampling, ComfyUI's convention:
        0 is before any noise is removed (infinite, so that every sigma is at or below it),
        1 the end (0), and in between the sigma of timestep ``(1 - percent) * (N - 1)``."""
        if percent <= 0.0:
            return float("inf")
        if percent >= 1.0:
            return 0.0
        return float(self.sigma((1.0 - percent) * (self.num_timesteps - 1)))

    def timestep(self, sigma: torch.Tensor | float, quantize: bool = True) -> torch.Tensor:
        """The timestep the UNet is given for noise level ``sigma`` (float32, same shape).

        ``quantize=True`` picks the nearest table entry in log-sigma (ComfyUI's
        ``ModelSamplingDiscrete.timestep``); ``quantize=False`` interpolates linearly in
        log-sigma between the two neighbouring entries (k-diffusion's ``sigma_to_t``), the
        exact inverse of :meth:`sigma` inside the table's range.
        """
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigma = sigma.log().reshape(-1)
        dists = log_sigma[None, :] - self.log_sigmas[:, None]  # [N, M]
        if quantize:
            return dists.abs().argmin(dim=0).float().reshape(sigma.shape)
        # index of the last table entry not above log_sigma, kept inside [0, N-2]
        low = (dists >= 0).long().cumsum(dim=0).argmax(dim=0).clamp(max=self.num_timesteps - 2)
        high = low + 1
        lo_val, hi_val = self.log_sigmas[low], self.log_sigmas[high]
        w = ((lo_val - log_sigma) / (lo_val - hi_val)).clamp(0, 1)
        return ((1 - w) * low.float() + w * high.float()).reshape(sigma.shape)


def zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Rescale alpha-bar [N] so the last timestep is pure noise (signal-to-noise ratio 0).

    Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", alg. 1:
    sqrt(alpha-bar) is shifted so its last entry is 0, then scaled so its first entry keeps
    its value; every entry in between moves linearly. Returns a new float64 tensor [N]
    whose last entry is exactly 0 (sigma infinite: see
    :meth:`DiscreteSchedule.with_zero_terminal_snr` for a schedule samplers can use).
    """
    root = torch.as_tensor(alphas_cumprod, dtype=torch.float64).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    rescaled = (root - last) * (first / (first - last))
    rescaled[-1] = 0.0  # exactly, whatever the rounding above
    return rescaled**2


def sd_schedule() -> DiscreteSchedule:
    """The discrete schedule shared by SD1.x, SD2.x and SDXL (scaled linear, 1000 steps)."""
    return DiscreteSchedule.from_betas(scaled_linear_betas())
