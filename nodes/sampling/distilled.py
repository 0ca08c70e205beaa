"""The noise schedule of a latent consistency model (LCM): a subset of the training steps.

An LCM (or an LCM-LoRA) is distilled on a few of its teacher's training timesteps: with
1000 training steps and 50 original steps, the timesteps 19, 39, ..., 999. As in ComfyUI's
``ModelSamplingDiscreteDistilled``, samplers then see a table of only those 50 sigmas
(so ``num_timesteps`` is 50 and the schedulers pick from it), while the UNet is given the
training timestep each table entry stands for.
"""

from __future__ import annotations

import torch

from .noise_schedule import DiscreteSchedule

LCM_ORIGINAL_TIMESTEPS = 50


class DistilledSchedule(DiscreteSchedule):
    """``original_timesteps`` evenly spaced entries of ``base``, ending at its last one.

    Table index ``i`` (0..original_timesteps-1) is training timestep
    ``first_timestep + i * skip`` of ``base``, with ``skip = N // original_timesteps``.
    :meth:`timestep` returns training timesteps and :meth:`sigma` takes them, so
    ``schedule.sigma(schedule.timestep(s)) == s`` for every table sigma ``s``.
    """

    def __init__(self, base: DiscreteSchedule, original_timesteps: int = LCM_ORIGINAL_TIMESTEPS) -> None:
        n = base.num_timesteps
        if not 2 <= original_timesteps <= n:
            raise ValueError(f"original_timesteps must be in 2..{n}, got {original_timesteps}")
        self.skip = n // original_timesteps
        self.first_timestep = n - 1 - (original_timesteps - 1) * self.skip
        picks = self.first_timestep + self.skip * torch.arange(original_timesteps)
        super().__init__(base.alphas_cumprod[picks])

    def timestep(self, sigma: torch.Tensor | float, quantize: bool = True) -> torch.Tensor:
        """The training timestep of noise level ``sigma`` (float32, same shape): the nearest
        table entry's when ``quantize``, else interpolated between the two neighbours."""
        index = super().timestep(sigma, quantize=quantize)
        return index * self.skip + self.first_timestep

    def sigma(self, timestep: torch.Tensor | float) -> torch.Tensor:
        """Sigma at a (fractional) training timestep, interpolating log-sigma between table
        entries; timesteps outside the table's range are clamped to its ends."""
        t = torch.as_tensor(timestep, dtype=torch.float32)
        return super().sigma((t - self.first_timestep) / self.skip)
