"""Custom sampling: ComfyUI's nodes that take a sampling run apart into its pieces.

SamplerCustomAdvanced samples with a NOISE (RandomNoise, DisableNoise), a GUIDER
(CFGGuider, BasicGuider, DualCFGGuider), a SAMPLER (KSamplerSelect or a parametrised
sampler node) and SIGMAS (BasicScheduler and the other schedulers, edited by SplitSigmas,
FlipSigmas, ...). Names, inputs (order, defaults, ranges) and outputs are ComfyUI's, so
saved workflows load unchanged; the run itself is KSampler's (:mod:`nodes.sd.sample`), so
KSamplerSelect + BasicScheduler + CFGGuider + RandomNoise give exactly KSampler's image.

SIGMAS values are float32 1-D CPU tensors; like every output they are cached by the
content of the nodes that made them, so editing a schedule re-runs only the nodes after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from graph import Input, Node, Output
from nodes import memory_estimates
from nodes.ksampler import MAX_SEED, SAMPLER_NAMES, SCHEDULER_NAMES

# ComfyUI's default sigma range of the explicit schedulers: SD1.x/SD2.x/SDXL's own.
SIGMA_MAX, SIGMA_MIN = 14.614642, 0.0291675
NOISE_DEVICES = ["gpu", "cpu"]


def _sigma_input(default: float) -> Input:
    return Input("FLOAT", default=default, min=0.0, max=5000.0, step=0.01)


def _eta() -> Input:
    return Input("FLOAT", default=1.0, min=0.0, max=100.0, step=0.01)


def _steps() -> Input:
    return Input("INT", default=20, min=1, max=10000)


def _two_latents(inputs: Mapping[str, Any]) -> Any:
    """Validation's memory estimate of a sampler with an output and a denoised_output."""
    estimate = memory_estimates.sampler(inputs)
    return None if estimate is None else replace(estimate, outputs=estimate.outputs * 2)


def _choice(name: str, noise_device: str | None = None, **options: Any) -> tuple:
    """A one-item SAMPLER output. ``noise_device`` "gpu" picks the ``<name>_gpu`` variant
    where the sampler table has one (the SDE samplers' Brownian noise drawn on the latent's
    device), else the CPU one, which is the same method."""
    from nodes.sampling.custom import SamplerChoice

    if noise_device == "gpu" and f"{name}_gpu" in SAMPLER_NAMES:
        name = f"{name}_gpu"
    return (SamplerChoice.of(name, **options),)


class SamplerCustom(Node):
    """Samples with a SAMPLER and SIGMAS from other nodes, with KSampler's CFG and noise;
    also returns the last step's denoised estimate."""

    category = "sampling/custom_sampling"
    model = Input("MODEL")
    add_noise = Input("BOOLEAN", default=True)
    noise_seed = Input("INT", default=0, min=0, max=MAX_SEED, control_after_generate=True)
    cfg = Input("FLOAT", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    sampler = Input("SAMPLER")
    sigmas = Input("SIGMAS")
    latent_image = Input("LATENT")
    outputs = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return _two_latents(inputs)

    def execute(self, model: Any, add_noise: bool, noise_seed: int, cfg: float, positive: list, negative: list,
                sampler: Any, sigmas: Any, latent_image: dict) -> tuple:
        from nodes.sampling.custom import NoiseSource
        from nodes.sd.guiders import CFGGuider
        from nodes.sd.sample import sample_latent

        guider = CFGGuider(model, positive, negative, cfg)
        return sample_latent(self.context, guider, sampler, sigmas, NoiseSource(noise_seed, add_noise), latent_image)


class SamplerCustomAdvanced(Node):
    """Samples with a NOISE, GUIDER, SAMPLER and SIGMAS from other nodes; also returns the
    last step's denoised estimate."""

    category = "sampling/custom_sampling"
    noise = Input("NOISE")
    guider = Input("GUIDER")
    sampler = Input("SAMPLER")
    sigmas = Input("SIGMAS")
    latent_image = Input("LATENT")
    outputs = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return _two_latents(inputs)

    def execute(self, noise: Any, guider: Any, sampler: Any, sigmas: Any, latent_image: dict) -> tuple:
        from nodes.sd.sample import sample_latent

        return sample_latent(self.context, guider, sampler, sigmas, noise, latent_image)


class AddNoise(Node):
    """Adds NOISE to a latent at the noise level the SIGMAS span (their first minus last),
    for sampling it later with DisableNoise."""

    category = "experimental/custom_sampling/noise"
    model = Input("MODEL")
    noise = Input("NOISE")
    sigmas = Input("SIGMAS")
    latent_image = Input("LATENT")
    outputs = (Output("LATENT"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.same_latent(inputs, "latent_image")

    def execute(self, model: Any, noise: Any, sigmas: Any, latent_image: dict) -> tuple:
        import torch

        if len(sigmas) == 0:
            return (latent_image,)
        samples = latent_image["samples"].float()
        drawn = noise.generate(samples.shape, latent_image.get("batch_index"))
        level = abs(float(sigmas[0]) - float(sigmas[-1])) if len(sigmas) > 1 else float(sigmas[0])
        # noise is added in the UNet's latent space, where sigma is measured, then scaled back
        noisy = (samples * model.latent_scale + drawn * level) / model.latent_scale
        return (dict(latent_image, samples=torch.nan_to_num(noisy, nan=0.0, posinf=0.0, neginf=0.0)),)


class KSamplerSelect(Node):
    """A SAMPLER by name, with its default options."""

    category = "sampling/samplers"
    sampler_name = Input(choices=list(SAMPLER_NAMES), default="euler")
    outputs = (Output("SAMPLER"),)

    def execute(self, sampler_name: str) -> tuple:
        return _choice(sampler_name)


class SamplerEulerAncestral(Node):
    """euler_ancestral with its noise amount ``eta`` and noise scale ``s_noise``."""

    category = "sampling/samplers"
    eta = _eta()
    s_noise = _eta()
    outputs = (Output("SAMPLER"),)

    def execute(self, eta: float, s_noise: float) -> tuple:
        return _choice("euler_ancestral", eta=eta, s_noise=s_noise)


class SamplerDPMPP_2S_Ancestral(Node):  # noqa: N801 (ComfyUI's node name)
    """dpmpp_2s_ancestral with ``eta`` and ``s_noise``."""

    category = "sampling/samplers"
    eta = _eta()
    s_noise = _eta()
    outputs = (Output("SAMPLER"),)

    def execute(self, eta: float, s_noise: float) -> tuple:
        return _choice("dpmpp_2s_ancestral", eta=eta, s_noise=s_noise)


class SamplerDPMPP_SDE(Node):  # noqa: N801
    """dpmpp_sde with ``eta``, ``s_noise`` and its sub-step ratio ``r``."""

    category = "sampling/samplers"
    eta = _eta()
    s_noise = _eta()
    r = Input("FLOAT", default=0.5, min=0.0, max=100.0, step=0.01)
    noise_device = Input(choices=NOISE_DEVICES, default="gpu")
    outputs = (Output("SAMPLER"),)

    def execute(self, eta: float, s_noise: float, r: float, noise_device: str) -> tuple:
        return _choice("dpmpp_sde", noise_device, eta=eta, s_noise=s_noise, r=r)


class SamplerDPMPP_2M_SDE(Node):  # noqa: N801
    """dpmpp_2m_sde with its second-order correction ``solver_type``, ``eta`` and ``s_noise``."""

    category = "sampling/samplers"
    solver_type = Input(choices=["midpoint", "heun"], default="midpoint")
    eta = _eta()
    s_noise = _eta()
    noise_device = Input(choices=NOISE_DEVICES, default="gpu")
    outputs = (Output("SAMPLER"),)

    def execute(self, solver_type: str, eta: float, s_noise: float, noise_device: str) -> tuple:
        return _choice("dpmpp_2m_sde", noise_device, eta=eta, s_noise=s_noise, solver_type=solver_type)


class SamplerDPMPP_3M_SDE(Node):  # noqa: N801
    """dpmpp_3m_sde with ``eta`` and ``s_noise``."""

    category = "sampling/samplers"
    eta = _eta()
    s_noise = _eta()
    noise_device = Input(choices=NOISE_DEVICES, default="gpu")
    outputs = (Output("SAMPLER"),)

    def execute(self, eta: float, s_noise: float, noise_device: str) -> tuple:
        return _choice("dpmpp_3m_sde", noise_device, eta=eta, s_noise=s_noise)


class SamplerLMS(Node):
    """lms with its ``order`` (how many past steps each step uses)."""

    category = "sampling/samplers"
    order = Input("INT", default=4, min=1, max=100)
    outputs = (Output("SAMPLER"),)

    def execute(self, order: int) -> tuple:
        return _choice("lms", order=order)


class SamplerEulerAncestralCFGPP(Node):
    """euler_ancestral_cfg_pp (CFG++: re-noised along the unconditional estimate) with
    ``eta`` and ``s_noise``."""

    category = "sampling/samplers"
    display_name = "SamplerEulerAncestralCFG++"
    eta = Input("FLOAT", default=1.0, min=0.0, max=1.0, step=0.01)
    s_noise = Input("FLOAT", default=1.0, min=0.0, max=10.0, step=0.01)
    outputs = (Output("SAMPLER"),)

    def execute(self, eta: float, s_noise: float) -> tuple:
        return _choice("euler_ancestral_cfg_pp", eta=eta, s_noise=s_noise)


def _unsupported(node: str, **settings: tuple[float, float]) -> None:
    """Refuses settings (value, the only supported value) that our sampler does not implement,
    rather than sampling as if they had been left at their defaults."""
    for name, (value, supported) in settings.items():
        if value != supported:
            raise ValueError(f"{node}: {name} = {value} is not supported here (only {supported})")


class SamplerDPMAdaptative(Node):
    """dpm_adaptive (adaptive-step DPM-Solver) with its order and error control."""

    category = "sampling/samplers"
    order = Input("INT", default=3, min=2, max=3)
    rtol = Input("FLOAT", default=0.05, min=0.0, max=100.0, step=0.01)
    atol = Input("FLOAT", default=0.0078, min=0.0, max=100.0, step=0.01)
    h_init = Input("FLOAT", default=0.05, min=0.0, max=100.0, step=0.01)
    pcoeff = Input("FLOAT", default=0.0, min=0.0, max=100.0, step=0.01)
    icoeff = Input("FLOAT", default=1.0, min=0.0, max=100.0, step=0.01)
    dcoeff = Input("FLOAT", default=0.0, min=0.0, max=100.0, step=0.01)
    accept_safety = Input("FLOAT", default=0.81, min=0.0, max=100.0, step=0.01)
    eta = Input("FLOAT", default=0.0, min=0.0, max=100.0, step=0.01)
    s_noise = _eta()
    outputs = (Output("SAMPLER"),)

    def execute(self, order: int, rtol: float, atol: float, h_init: float, pcoeff: float, icoeff: float,
                dcoeff: float, accept_safety: float, eta: float, s_noise: float) -> tuple:
        # our controller is the integral one (ComfyUI's defaults) and deterministic
        _unsupported("SamplerDPMAdaptative", pcoeff=(pcoeff, 0.0), icoeff=(icoeff, 1.0), dcoeff=(dcoeff, 0.0),
                     eta=(eta, 0.0))
        return _choice("dpm_adaptive", order=order, rtol=rtol, atol=atol, h_init=h_init, accept_safety=accept_safety)


class SamplerER_SDE(Node):  # noqa: N801
    """er_sde (extended reverse-time SDE solver) with its solver type (ER-SDE's noise scale,
    the reverse-time SDE family's with ``eta``, or the ODE), number of stages and ``s_noise``."""

    category = "sampling/samplers"
    solver_type = Input(choices=["ER-SDE", "Reverse-time SDE", "ODE"], default="ER-SDE")
    max_stage = Input("INT", default=3, min=1, max=3)
    eta = Input("FLOAT", default=1.0, min=0.0, max=100.0, step=0.01, tooltip=(
        "Stochastic strength of reverse-time SDE.\nWhen eta=0, it reduces to deterministic ODE. "
        "This setting doesn't apply to ER-SDE solver type."))
    s_noise = _eta()
    outputs = (Output("SAMPLER"),)

    def execute(self, solver_type: str, max_stage: int, eta: float, s_noise: float) -> tuple:
        # As ComfyUI: the ODE (or a reverse-time SDE with eta 0) adds no noise; the two
        # non-ER types use the reverse-time family's noise scale f(s) = s^(eta + 1).
        if solver_type == "ODE" or (solver_type == "Reverse-time SDE" and eta == 0):
            eta, s_noise = 0.0, 0.0
        if solver_type == "ER-SDE":
            return _choice("er_sde", s_noise=s_noise, max_stage=max_stage)
        return _choice("er_sde", s_noise=s_noise, max_stage=max_stage, reverse_time_eta=float(eta))


class SamplerSASolver(Node):
    """sa_solver (stochastic Adams solver) with its orders and the stretch of sampling,
    in fractions of the way through, where it adds noise."""

    category = "sampling/samplers"
    model = Input("MODEL")
    eta = Input("FLOAT", default=1.0, min=0.0, max=10.0, step=0.01)
    sde_start_percent = Input("FLOAT", default=0.2, min=0.0, max=1.0, step=0.001)
    sde_end_percent = Input("FLOAT", default=0.8, min=0.0, max=1.0, step=0.001)
    s_noise = _eta()
    predictor_order = Input("INT", default=3, min=1, max=6)
    corrector_order = Input("INT", default=4, min=0, max=6)
    use_pece = Input("BOOLEAN", default=False)
    simple_order_2 = Input("BOOLEAN", default=False)
    outputs = (Output("SAMPLER"),)

    def execute(self, model: Any, eta: float, sde_start_percent: float, sde_end_percent: float, s_noise: float,
                predictor_order: int, corrector_order: int, use_pece: bool, simple_order_2: bool) -> tuple:
        from nodes.sampling.sigma_ops import percent_sigma

        tau = (percent_sigma(model.schedule, sde_start_percent), percent_sigma(model.schedule, sde_end_percent))
        return _choice("sa_solver", tau_sigmas=tau, eta=eta, s_noise=s_noise, predictor_order=predictor_order,
                       corrector_order=corrector_order, use_pece=use_pece, simple_order_2=simple_order_2)


class SamplerSEEDS2(Node):
    """seeds_2 (exponential SDE solver, two stages) with ``solver_type``, ``eta``, ``s_noise``
    and the relative position ``r`` of its intermediate stage."""

    category = "sampling/samplers"
    solver_type = Input(choices=["phi_1", "phi_2"], default="phi_1")
    eta = Input("FLOAT", default=1.0, min=0.0, max=100.0, step=0.01, tooltip="Stochastic strength")
    s_noise = Input("FLOAT", default=1.0, min=0.0, max=100.0, step=0.01, tooltip="SDE noise multiplier")
    r = Input("FLOAT", default=0.5, min=0.01, max=1.0, step=0.01,
              tooltip="Relative step size for the intermediate stage (c2 node)")
    outputs = (Output("SAMPLER"),)

    def execute(self, solver_type: str, eta: float, s_noise: float, r: float) -> tuple:
        return _choice("seeds_2", eta=eta, s_noise=s_noise, r=r, solver_type=solver_type)


class BasicScheduler(Node):
    """A model's SIGMAS by scheduler name, for ``steps`` steps at strength ``denoise``."""

    category = "sampling/schedulers"
    model = Input("MODEL")
    scheduler = Input(choices=list(SCHEDULER_NAMES), default="normal")
    steps = _steps()
    denoise = Input("FLOAT", default=1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("SIGMAS"),)

    def execute(self, model: Any, scheduler: str, steps: int, denoise: float) -> tuple:
        from nodes.sampling.sigma_ops import basic_sigmas

        return (basic_sigmas(model.schedule, scheduler, steps, denoise),)


class KarrasScheduler(Node):
    """Karras et al.'s schedule between explicit sigma_max and sigma_min."""

    category = "sampling/schedulers"
    steps = _steps()
    sigma_max = _sigma_input(SIGMA_MAX)
    sigma_min = _sigma_input(SIGMA_MIN)
    rho = Input("FLOAT", default=7.0, min=0.0, max=100.0, step=0.01)
    outputs = (Output("SIGMAS"),)

    def execute(self, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple:
        from nodes.sampling.sigma_ops import karras_sigmas

        return (karras_sigmas(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(Node):
    """Sigmas evenly spaced in log(sigma) between explicit bounds."""

    category = "sampling/schedulers"
    steps = _steps()
    sigma_max = _sigma_input(SIGMA_MAX)
    sigma_min = _sigma_input(SIGMA_MIN)
    outputs = (Output("SIGMAS"),)

    def execute(self, steps: int, sigma_max: float, sigma_min: float) -> tuple:
        from nodes.sampling.sigma_ops import exponential_sigmas

        return (exponential_sigmas(steps, sigma_min, sigma_max),)


class PolyexponentialScheduler(Node):
    """log(sigma) along a power ``rho`` of a ramp between explicit bounds."""

    category = "sampling/schedulers"
    steps = _steps()
    sigma_max = _sigma_input(SIGMA_MAX)
    sigma_min = _sigma_input(SIGMA_MIN)
    rho = Input("FLOAT", default=1.0, min=0.0, max=100.0, step=0.01)
    outputs = (Output("SIGMAS"),)

    def execute(self, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple:
        from nodes.sampling.sigma_ops import polyexponential_sigmas

        return (polyexponential_sigmas(steps, sigma_min, sigma_max, rho),)


class LaplaceScheduler(Node):
    """log(sigma) at Laplace(mu, beta) quantiles, clamped to the bounds (no final 0)."""

    category = "sampling/schedulers"
    steps = _steps()
    sigma_max = _sigma_input(SIGMA_MAX)
    sigma_min = _sigma_input(SIGMA_MIN)
    mu = Input("FLOAT", default=0.0, min=-10.0, max=10.0, step=0.1)
    beta = Input("FLOAT", default=0.5, min=0.0, max=10.0, step=0.1)
    outputs = (Output("SIGMAS"),)

    def execute(self, steps: int, sigma_max: float, sigma_min: float, mu: float, beta: float) -> tuple:
        from nodes.sampling.sigma_ops import laplace_sigmas

        return (laplace_sigmas(steps, sigma_min, sigma_max, mu, beta),)


class SDTurboScheduler(Node):
    """SD/SDXL Turbo's few-step schedule of a model (timesteps 999, 899, ...)."""

    category = "sampling/schedulers"
    model = Input("MODEL")
    steps = Input("INT", default=1, min=1, max=10)
    denoise = Input("FLOAT", default=1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("SIGMAS"),)

    def execute(self, model: Any, steps: int, denoise: float) -> tuple:
        from nodes.sampling.sigma_ops import sd_turbo_sigmas

        return (sd_turbo_sigmas(model.schedule, steps, denoise),)


class BetaSamplingScheduler(Node):
    """A model's timesteps at Beta(alpha, beta) quantiles (the ``beta`` scheduler's shape)."""

    category = "sampling/schedulers"
    model = Input("MODEL")
    steps = _steps()
    alpha = Input("FLOAT", default=0.6, min=0.0, max=50.0, step=0.01)
    beta = Input("FLOAT", default=0.6, min=0.0, max=50.0, step=0.01)
    outputs = (Output("SIGMAS"),)

    def execute(self, model: Any, steps: int, alpha: float, beta: float) -> tuple:
        from nodes.sampling.schedulers import beta as beta_schedule

        return (beta_schedule(model.schedule, steps, alpha, beta),)


class VPScheduler(Node):
    """The continuous variance-preserving SDE's noise levels."""

    category = "sampling/schedulers"
    steps = _steps()
    beta_d = Input("FLOAT", default=19.9, min=0.0, max=5000.0, step=0.01)
    beta_min = Input("FLOAT", default=0.1, min=0.0, max=5000.0, step=0.01)
    eps_s = Input("FLOAT", default=0.001, min=0.0, max=1.0, step=0.0001)
    outputs = (Output("SIGMAS"),)

    def execute(self, steps: int, beta_d: float, beta_min: float, eps_s: float) -> tuple:
        from nodes.sampling.sigma_ops import vp_sigmas

        return (vp_sigmas(steps, beta_d, beta_min, eps_s),)


class ManualSigmas(Node):
    """SIGMAS typed in as a list of numbers, e.g. "14.6, 7, 3.1, 0"."""

    category = "experimental/custom_sampling"
    sigmas = Input("STRING", default="1, 0.5")
    outputs = (Output("SIGMAS"),)

    def execute(self, sigmas: str) -> tuple:
        from nodes.sampling.sigma_ops import parse_manual

        return (parse_manual(sigmas),)


class SplitSigmas(Node):
    """Splits SIGMAS at a step into the steps before it and the steps from it on."""

    category = "sampling/sigmas"
    sigmas = Input("SIGMAS")
    step = Input("INT", default=0, min=0, max=10000)
    outputs = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))

    def execute(self, sigmas: Any, step: int) -> tuple:
        from nodes.sampling.sigma_ops import split_at_step

        return split_at_step(sigmas, step)


class SplitSigmasDenoise(Node):
    """Splits SIGMAS so that the low part holds a ``denoise`` fraction of the steps."""

    category = "sampling/sigmas"
    sigmas = Input("SIGMAS")
    denoise = Input("FLOAT", default=1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))

    def execute(self, sigmas: Any, denoise: float) -> tuple:
        from nodes.sampling.sigma_ops import split_at_denoise

        return split_at_denoise(sigmas, denoise)


class FlipSigmas(Node):
    """Reverses SIGMAS (from low noise to high, e.g. to turn an image back into noise)."""

    category = "sampling/sigmas"
    sigmas = Input("SIGMAS")
    outputs = (Output("SIGMAS"),)

    def execute(self, sigmas: Any) -> tuple:
        from nodes.sampling.sigma_ops import flip

        return (flip(sigmas),)


class SetFirstSigma(Node):
    """Replaces the first noise level of SIGMAS."""

    category = "sampling/sigmas"
    sigmas = Input("SIGMAS")
    sigma = Input("FLOAT", default=136.0, min=0.0, max=20000.0, step=0.001)
    outputs = (Output("SIGMAS"),)

    def execute(self, sigmas: Any, sigma: float) -> tuple:
        from nodes.sampling.sigma_ops import set_first

        return (set_first(sigmas, sigma),)


class SamplingPercentToSigma(Node):
    """The model's noise level a fraction of the way through sampling (0 = start, 1 = end)."""

    category = "sampling/sigmas"
    model = Input("MODEL")
    sampling_percent = Input("FLOAT", default=0.0, min=0.0, max=1.0, step=0.0001)
    return_actual_sigma = Input("BOOLEAN", default=False, tooltip=(
        "Return the actual sigma value instead of the value used for interval checks.\n"
        "This only affects results at 0.0 and 1.0."))
    outputs = (Output("FLOAT", "sigma_value"),)

    def execute(self, model: Any, sampling_percent: float, return_actual_sigma: bool) -> tuple:
        from nodes.sampling.sigma_ops import percent_sigma

        return (percent_sigma(model.schedule, sampling_percent, return_actual_sigma),)


class RandomNoise(Node):
    """NOISE drawn from a seed (ComfyUI's CPU noise: the same seed gives the same image anywhere)."""

    category = "sampling/noise"
    noise_seed = Input("INT", default=0, min=0, max=MAX_SEED, control_after_generate=True)
    outputs = (Output("NOISE"),)

    def execute(self, noise_seed: int) -> tuple:
        from nodes.sampling.custom import NoiseSource

        return (NoiseSource(noise_seed),)


class DisableNoise(Node):
    """NOISE that adds nothing, for a latent that already carries its noise."""

    category = "sampling/noise"
    outputs = (Output("NOISE"),)

    def execute(self) -> tuple:
        from nodes.sampling.custom import NoiseSource

        return (NoiseSource(0, enabled=False),)


class BasicGuider(Node):
    """A GUIDER without guidance: the model's estimate for one conditioning."""

    category = "sampling/guiders"
    display_name = "Basic Guider"
    model = Input("MODEL")
    conditioning = Input("CONDITIONING")
    outputs = (Output("GUIDER"),)

    def execute(self, model: Any, conditioning: list) -> tuple:
        from nodes.sd.guiders import BasicGuider as Guider

        return (Guider(model, conditioning),)


class CFGGuider(Node):
    """A GUIDER with classifier-free guidance, as KSampler samples."""

    category = "sampling/guiders"
    display_name = "CFG Guider"
    model = Input("MODEL")
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    cfg = Input("FLOAT", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    outputs = (Output("GUIDER"),)

    def execute(self, model: Any, positive: list, negative: list, cfg: float) -> tuple:
        from nodes.sd.guiders import CFGGuider as Guider

        return (Guider(model, positive, negative, cfg),)


class DualCFGGuider(Node):
    """A GUIDER with two prompts: ``cfg_conds`` pushes from cond2 towards cond1,
    ``cfg_cond2_negative`` from the negative towards cond2."""

    category = "sampling/guiders"
    display_name = "Dual CFG Guider"
    model = Input("MODEL")
    cond1 = Input("CONDITIONING")
    cond2 = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    cfg_conds = Input("FLOAT", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    cfg_cond2_negative = Input("FLOAT", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    style = Input(choices=["regular", "nested"], default="regular")
    outputs = (Output("GUIDER"),)

    def execute(self, model: Any, cond1: list, cond2: list, negative: list, cfg_conds: float,
                cfg_cond2_negative: float, style: str) -> tuple:
        from nodes.sd.guiders import DualCFGGuider as Guider

        return (Guider(model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative, style == "nested"),)
