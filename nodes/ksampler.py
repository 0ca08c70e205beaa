"""Sampler nodes: KSampler and KSamplerAdvanced, with ComfyUI's inputs and semantics.

The sampler and scheduler names are declared here, once, as plain tuples so that listing
nodes does not import torch; the sampling library (``nodes/sampling/samplers.py`` and
``schedulers.py``) serves exactly these names and fails to import if one lacks a function.
The starting noise for a seed is ``torch.randn`` from a CPU generator seeded with it, in the
latent's shape; the per-step noise of stochastic samplers is drawn as ComfyUI draws it
(:func:`nodes.sampling.noise.make_noise_sampler`), so a seed gives ComfyUI's image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph import Input, Node, Output
from nodes import memory_estimates

SAMPLER_NAMES = ("euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
                 "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
                 "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
                 "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde",
                 "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
                 "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
                 "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
                 "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2")
SCHEDULER_NAMES = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta",
                   "linear_quadratic", "kl_optimal")
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def sample_latent(context: Any, model: Any, positive: list, negative: list, latent: dict, *, seed: int, cfg: float,
                  sampler_name: str, sigmas: Any, add_noise: bool = True) -> dict:
    """KSampler's run: CFG guidance, the named sampler with its defaults, noise from ``seed``
    (zeros when not ``add_noise``; the seed still drives stochastic samplers), through the
    one sampling path every sampler node shares (:func:`nodes.sd.sample.sample_latent`).
    Returns the new LATENT (unscaled, on the CPU)."""
    from nodes.sampling.custom import NoiseSource, SamplerChoice
    from nodes.sd.guiders import CFGGuider
    from nodes.sd.sample import sample_latent as sample

    guider = CFGGuider(model, positive, negative, cfg)
    return sample(context, guider, SamplerChoice(sampler_name), sigmas, NoiseSource(seed, add_noise), latent)[0]


class KSampler(Node):
    """Denoises a latent: txt2img from an empty latent, img2img with denoise < 1."""

    category = "sampling"
    model = Input("MODEL")
    seed = Input("INT", default=0, min=0, max=MAX_SEED, control_after_generate=True)
    steps = Input("INT", default=20, min=1, max=10000)
    cfg = Input("FLOAT", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    sampler_name = Input(choices=list(SAMPLER_NAMES), default="euler")
    scheduler = Input(choices=list(SCHEDULER_NAMES), default="normal")
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    latent_image = Input("LATENT")
    denoise = Input("FLOAT", default=1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("LATENT"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.sampler(inputs)

    def execute(self, model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                positive: list, negative: list, latent_image: dict, denoise: float) -> tuple:
        from nodes.sampling import denoise_sigmas

        sigmas = denoise_sigmas(model.schedule, scheduler, sampler_name, steps, denoise)
        return (sample_latent(self.context, model, positive, negative, latent_image, seed=seed, cfg=cfg,
                              sampler_name=sampler_name, sigmas=sigmas),)


class KSamplerAdvanced(Node):
    """KSampler over a slice of the schedule, for multi-pass workflows (e.g. base + refiner)."""

    category = "sampling"
    model = Input("MODEL")
    add_noise = Input(choices=["enable", "disable"], default="enable")
    noise_seed = Input("INT", default=0, min=0, max=MAX_SEED, control_after_generate=True)
    steps = Input("INT", default=20, min=1, max=10000)
    cfg = Input("FLOAT", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    sampler_name = Input(choices=list(SAMPLER_NAMES), default="euler")
    scheduler = Input(choices=list(SCHEDULER_NAMES), default="normal")
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    latent_image = Input("LATENT")
    start_at_step = Input("INT", default=0, min=0, max=10000)
    end_at_step = Input("INT", default=10000, min=0, max=10000)
    return_with_leftover_noise = Input(choices=["disable", "enable"], default="disable")
    outputs = (Output("LATENT"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.sampler(inputs)

    def execute(self, model: Any, add_noise: str, noise_seed: int, steps: int, cfg: float, sampler_name: str,
                scheduler: str, positive: list, negative: list, latent_image: dict, start_at_step: int,
                end_at_step: int, return_with_leftover_noise: str) -> tuple:
        from nodes.sampling import advanced_sigmas, calculate_sigmas

        sigmas = advanced_sigmas(calculate_sigmas(model.schedule, scheduler, sampler_name, steps),
                                 start_at_step, end_at_step, return_with_leftover_noise == "enable")
        return (sample_latent(self.context, model, positive, negative, latent_image, seed=noise_seed, cfg=cfg,
                              sampler_name=sampler_name, sigmas=sigmas, add_noise=add_noise == "enable"),)
