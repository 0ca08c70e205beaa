"""Sampling library: sigma schedules, k-diffusion-style samplers, model wrappers (eps/v/x0/lcm,
CFG), KSampler step planning and latent previews.  No node classes live here.

The node layer typically does::

    schedule = sd_schedule()                         # or DiscreteSchedule.from_betas(betas)
    sigmas = denoise_sigmas(schedule, scheduler, sampler, steps, denoise)
    model = CFGDenoiser(DiscreteDenoiser(unet, schedule, "eps"), cond, uncond, cfg)
    out = run_sampler(model, latent, sigmas, sampler, schedule=schedule, seed=seed,
                      noise_mask=mask, callback=cb)
"""

from .denoiser import PREDICTIONS, CFGDenoiser, DiscreteDenoiser, concat_conds
from .distilled import DistilledSchedule
from .latent_preview import latent_to_image, latent_to_rgb
from .noise import BrownianTreeNoise, GaussianNoise, initial_noise, make_noise_sampler
from .noise_schedule import DiscreteSchedule, scaled_linear_betas, sd_schedule, zero_terminal_snr
from .regions import CondRegion, add_area_twins, make_region, predict_regions
from .run import prepare_mask, run_sampler
from .samplers import SAMPLER_NAMES, SamplerSpec, get_sampler
from .schedulers import SCHEDULER_NAMES, get_sigmas
from .step_sigmas import advanced_sigmas, calculate_sigmas, denoise_sigmas, is_max_denoise, noise_latent

__all__ = [
    "PREDICTIONS",
    "SAMPLER_NAMES",
    "SCHEDULER_NAMES",
    "BrownianTreeNoise",
    "CFGDenoiser",
    "CondRegion",
    "DiscreteDenoiser",
    "DiscreteSchedule",
    "DistilledSchedule",
    "GaussianNoise",
    "SamplerSpec",
    "add_area_twins",
    "advanced_sigmas",
    "calculate_sigmas",
    "concat_conds",
    "denoise_sigmas",
    "get_sampler",
    "get_sigmas",
    "initial_noise",
    "is_max_denoise",
    "latent_to_image",
    "latent_to_rgb",
    "make_noise_sampler",
    "make_region",
    "noise_latent",
    "predict_regions",
    "prepare_mask",
    "run_sampler",
    "scaled_linear_betas",
    "sd_schedule",
    "zero_terminal_snr",
]
