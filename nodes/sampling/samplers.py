"""The sampler table: ComfyUI sampler name -> function, plus what each needs.

:data:`SAMPLER_NAMES` lists the 42 names of ComfyUI 0.3.64's KSampler (its
``SAMPLER_NAMES``), in its order, each served by our own function:

- ODE, deterministic: euler, heun, heunpp2, dpm_2, lms, dpm_fast, dpm_adaptive,
  dpmpp_2m, ipndm, ipndm_v, deis, res_multistep, gradient_estimation, ddim, uni_pc,
  uni_pc_bh2 (:mod:`.samplers_classic`, :mod:`.samplers_ode_extra`,
  :mod:`.samplers_dpm_solver`, :mod:`.samplers_dpmpp`, :mod:`.samplers_multistep`,
  :mod:`.samplers_res`);
- ancestral / independent noise per step: euler_ancestral, dpm_2_ancestral,
  dpmpp_2s_ancestral, res_multistep_ancestral, ddpm, lcm, er_sde, seeds_2, seeds_3,
  sa_solver, sa_solver_pece (:mod:`.samplers_sde_extra`, :mod:`.samplers_sa`);
- SDE on one Brownian path: dpmpp_sde, dpmpp_2m_sde, dpmpp_2m_sde_heun, dpmpp_3m_sde and
  their ``_gpu`` twins, which share the CPU variant's function: ComfyUI's only difference
  is that it draws their Brownian tree on the latent's device (noise "brownian_gpu");
- CFG++ (guidance on the x0 estimate only, the unconditional estimate through
  :func:`~nodes.sampling.sampler_base.denoise_with_uncond`): euler_cfg_pp,
  euler_ancestral_cfg_pp, dpmpp_2s_ancestral_cfg_pp, dpmpp_2m_cfg_pp,
  res_multistep_cfg_pp, res_multistep_ancestral_cfg_pp, gradient_estimation_cfg_pp
  (:mod:`.samplers_cfgpp`, :mod:`.samplers_res`).

Each spec's ``noise`` is the noise source ComfyUI's function uses by default (its
``default_noise_sampler`` -> "gaussian", ``BrownianTreeNoiseSampler`` -> "brownian" or,
with ``cpu=False``, "brownian_gpu"), or None where it draws none (or draws but multiplies
it by 0, e.g. res_multistep with eta 0, heunpp2 without churn).
Any other name is refused by :func:`get_sampler` with a clear error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nodes.ksampler import SAMPLER_NAMES

from . import samplers_cfgpp as cfgpp
from . import samplers_classic as classic
from . import samplers_dpm_solver as dpm_solver
from . import samplers_dpmpp as dpmpp
from . import samplers_multistep as multistep
from . import samplers_ode_extra as ode_extra
from . import samplers_res as res
from . import samplers_sa as sa
from . import samplers_sde_extra as sde_extra
from .noise_schedule import DiscreteSchedule


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler function and its needs.

    ``noise``: None (deterministic), "gaussian" (independent draws per step),
    "brownian" (a torchsde Brownian tree on the CPU, for SDE sub-steps that must share one
    path) or "brownian_gpu" (that tree on the latent's device, ComfyUI's ``*_gpu`` names):
    whichever ComfyUI's function draws; see :func:`nodes.sampling.noise.make_noise_sampler`.
    ``discard_penultimate_sigma``: ComfyUI computes steps+1 sigmas for these and drops the
    second-to-last one (they would otherwise spend a step at the tiny sigma_min).
    ``schedule_options``: keyword arguments the function takes from the model's schedule
    (SA-Solver's stochastic interval); :meth:`options` gives them.
    ``fresh_inpaint_noise``: when inpainting, the kept region is re-noised with noise drawn
    from seed + 1 instead of the starting noise (ComfyUI's "ddim" does this).
    """

    fn: Callable[..., torch.Tensor]
    noise: str | None = None
    discard_penultimate_sigma: bool = False
    schedule_options: Callable[[DiscreteSchedule], dict[str, Any]] | None = None
    fresh_inpaint_noise: bool = False

    def options(self, schedule: DiscreteSchedule) -> dict[str, Any]:
        """The keyword arguments ``fn`` needs for a model with ``schedule``."""
        return self.schedule_options(schedule) if self.schedule_options is not None else {}


def _sa_solver_options(schedule: DiscreteSchedule) -> dict[str, Any]:
    """SA-Solver injects noise only between the model's sigmas at 20% and 80% of sampling
    (ComfyUI's default ``tau_func``)."""
    return {"tau_sigmas": (schedule.percent_to_sigma(0.2), schedule.percent_to_sigma(0.8))}


SAMPLERS: dict[str, SamplerSpec] = {
    "euler": SamplerSpec(classic.sample_euler),
    "euler_cfg_pp": SamplerSpec(cfgpp.sample_euler_cfg_pp),
    "euler_ancestral": SamplerSpec(classic.sample_euler_ancestral, noise="gaussian"),
    "euler_ancestral_cfg_pp": SamplerSpec(cfgpp.sample_euler_ancestral_cfg_pp, noise="gaussian"),
    "heun": SamplerSpec(classic.sample_heun),
    "heunpp2": SamplerSpec(ode_extra.sample_heunpp2),
    "dpm_2": SamplerSpec(classic.sample_dpm_2, discard_penultimate_sigma=True),
    "dpm_2_ancestral": SamplerSpec(classic.sample_dpm_2_ancestral, noise="gaussian", discard_penultimate_sigma=True),
    "lms": SamplerSpec(classic.sample_lms),
    "dpm_fast": SamplerSpec(dpm_solver.sample_dpm_fast),
    "dpm_adaptive": SamplerSpec(dpm_solver.sample_dpm_adaptive),
    "dpmpp_2s_ancestral": SamplerSpec(dpmpp.sample_dpmpp_2s_ancestral, noise="gaussian"),
    "dpmpp_2s_ancestral_cfg_pp": SamplerSpec(cfgpp.sample_dpmpp_2s_ancestral_cfg_pp, noise="gaussian"),
    "dpmpp_sde": SamplerSpec(dpmpp.sample_dpmpp_sde, noise="brownian"),
    "dpmpp_sde_gpu": SamplerSpec(dpmpp.sample_dpmpp_sde, noise="brownian_gpu"),
    "dpmpp_2m": SamplerSpec(dpmpp.sample_dpmpp_2m),
    "dpmpp_2m_cfg_pp": SamplerSpec(cfgpp.sample_dpmpp_2m_cfg_pp),
    "dpmpp_2m_sde": SamplerSpec(dpmpp.sample_dpmpp_2m_sde, noise="brownian"),
    "dpmpp_2m_sde_gpu": SamplerSpec(dpmpp.sample_dpmpp_2m_sde, noise="brownian_gpu"),
    "dpmpp_2m_sde_heun": SamplerSpec(sde_extra.sample_dpmpp_2m_sde_heun, noise="brownian"),
    "dpmpp_2m_sde_heun_gpu": SamplerSpec(sde_extra.sample_dpmpp_2m_sde_heun, noise="brownian_gpu"),
    "dpmpp_3m_sde": SamplerSpec(dpmpp.sample_dpmpp_3m_sde, noise="brownian"),
    "dpmpp_3m_sde_gpu": SamplerSpec(dpmpp.sample_dpmpp_3m_sde, noise="brownian_gpu"),
    "ddpm": SamplerSpec(classic.sample_ddpm, noise="gaussian"),
    "lcm": SamplerSpec(classic.sample_lcm, noise="gaussian"),
    "ipndm": SamplerSpec(classic.sample_ipndm),
    "ipndm_v": SamplerSpec(ode_extra.sample_ipndm_v),
    "deis": SamplerSpec(multistep.sample_deis),
    "res_multistep": SamplerSpec(res.sample_res_multistep),
    "res_multistep_cfg_pp": SamplerSpec(res.sample_res_multistep_cfg_pp),
    "res_multistep_ancestral": SamplerSpec(res.sample_res_multistep_ancestral, noise="gaussian"),
    "res_multistep_ancestral_cfg_pp": SamplerSpec(res.sample_res_multistep_ancestral_cfg_pp, noise="gaussian"),
    "gradient_estimation": SamplerSpec(res.sample_gradient_estimation),
    "gradient_estimation_cfg_pp": SamplerSpec(res.sample_gradient_estimation_cfg_pp),
    "er_sde": SamplerSpec(sde_extra.sample_er_sde, noise="gaussian"),
    "seeds_2": SamplerSpec(sde_extra.sample_seeds_2, noise="gaussian"),
    "seeds_3": SamplerSpec(sde_extra.sample_seeds_3, noise="gaussian"),
    "sa_solver": SamplerSpec(sa.sample_sa_solver, noise="gaussian", schedule_options=_sa_solver_options),
    "sa_solver_pece": SamplerSpec(sa.sample_sa_solver_pece, noise="gaussian", schedule_options=_sa_solver_options),
    "ddim": SamplerSpec(classic.sample_ddim, fresh_inpaint_noise=True),
    "uni_pc": SamplerSpec(multistep.sample_uni_pc, discard_penultimate_sigma=True),
    "uni_pc_bh2": SamplerSpec(multistep.sample_uni_pc_bh2, discard_penultimate_sigma=True),
}

# ComfyUI's sampler names are declared once, torch-free, in nodes/ksampler.py (the nodes' choices).
if tuple(SAMPLERS) != SAMPLER_NAMES:
    raise ImportError(f"the sampler table does not serve exactly nodes/ksampler.py's SAMPLER_NAMES, in order: "
                      f"{sorted(set(SAMPLERS) ^ set(SAMPLER_NAMES))}")


def get_sampler(name: str) -> SamplerSpec:
    """The :class:`SamplerSpec` for ComfyUI sampler ``name``; ``ValueError`` if not implemented."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown or unsupported sampler {name!r}; available: {', '.join(SAMPLER_NAMES)}") from None
