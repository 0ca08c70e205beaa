"""KSampler / KSamplerAdvanced step planning as pure functions over sigmas.

These reproduce ComfyUI's semantics for: which sigmas a (sampler, scheduler, steps,
denoise) choice uses; KSamplerAdvanced's start/end steps and leftover noise; and how the
starting latent is noised.  All sigmas are float32 1-D tensors, descending.
"""

from __future__ import annotations

import math

import torch

from .noise_schedule import DiscreteSchedule
from .samplers import get_sampler
from .schedulers import get_sigmas


def calculate_sigmas(schedule: DiscreteSchedule, scheduler_name: str, sampler_name: str, steps: int) -> torch.Tensor:
    """Full-denoise sigmas for ``steps`` steps of ``sampler_name`` on ``scheduler_name``.

    For samplers flagged ``discard_penultimate_sigma`` (dpm_2, dpm_2_ancestral, uni_pc,
    uni_pc_bh2) the schedule is computed for steps + 1 and its second-to-last sigma dropped,
    as ComfyUI does.  Raises ``ValueError`` for unknown names.
    """
    spec = get_sampler(sampler_name)
    if spec.discard_penultimate_sigma:
        sigmas = get_sigmas(scheduler_name, schedule, steps + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return get_sigmas(scheduler_name, schedule, steps)


def denoise_sigmas(schedule: DiscreteSchedule, scheduler_name: str, sampler_name: str, steps: int,
                   denoise: float = 1.0) -> torch.Tensor:
    """KSampler's sigmas for ``steps`` steps at strength ``denoise`` (img2img).

    denoise >= 0.9999: the full schedule.  denoise <= 0: an empty tensor (nothing to do; the
    input latent is returned unchanged by :func:`~nodes.sampling.run.run_sampler`).
    Otherwise a schedule for ``int(steps / denoise)`` steps is computed and its last
    ``steps + 1`` sigmas kept, so sampling starts part-way down the noise levels.
    """
    if denoise > 0.9999:
        return calculate_sigmas(schedule, scheduler_name, sampler_name, steps)
    if denoise <= 0.0:
        return torch.zeros(0)
    total = int(steps / denoise)
    return calculate_sigmas(schedule, scheduler_name, sampler_name, total)[-(steps + 1):]


def advanced_sigmas(sigmas: torch.Tensor, start_at_step: int, end_at_step: int,
                    return_with_leftover_noise: bool) -> torch.Tensor:
    """KSamplerAdvanced's slice of a full schedule.

    Steps ``end_at_step`` and beyond are cut (when that is inside the schedule); unless
    ``return_with_leftover_noise``, the last kept sigma is then forced to 0 so the result is
    fully denoised.  Steps before ``start_at_step`` are skipped.  A result with fewer than 2
    sigmas means "no steps": return the input latent unchanged.
    """
    sigmas = sigmas.clone()
    if end_at_step < len(sigmas) - 1:
        sigmas = sigmas[: end_at_step + 1]
        if not return_with_leftover_noise:
            sigmas[-1] = 0
    if start_at_step < len(sigmas) - 1:
        return sigmas[start_at_step:]
    return sigmas[:0]


def is_max_denoise(schedule: DiscreteSchedule, sigma_start: float) -> bool:
    """True when sampling starts from (at least) the model's top noise level."""
    return math.isclose(sigma_start, schedule.sigma_max, rel_tol=1e-5) or sigma_start > schedule.sigma_max


def noise_latent(latent: torch.Tensor, noise: torch.Tensor, sigma_start: float, max_denoise: bool) -> torch.Tensor:
    """The starting point x = latent + noise * scale for a schedule starting at ``sigma_start``.

    scale = sigma, or sqrt(1 + sigma^2) when starting from pure noise (``max_denoise``), so
    that x has the variance the UNet saw at its last training timestep whatever the latent
    (ComfyUI's EPS noise scaling, also used for v-prediction).  Shapes [B, C, h, w].
    """
    scale = math.sqrt(1.0 + sigma_start**2) if max_denoise else sigma_start
    return latent + noise * scale
