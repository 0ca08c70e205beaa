"""The sampler table: ComfyUI sampler name -> function, plus what each needs.

Only names that are really implemented appear in :data:`SAMPLER_NAMES`; anything else
(e.g. ``dpm_fast``, ``dpm_adaptive``, the ``*_cfg_pp`` and ``*_gpu`` variants) is refused
by :func:`get_sampler` with a clear error instead of being served by a look-alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import samplers_classic as classic
from . import samplers_dpmpp as dpmpp
from . import samplers_multistep as multistep


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler function and its needs.

    ``noise``: None (deterministic), "gaussian" (independent draws per step),
    "brownian" (a torchsde Brownian tree on the CPU, for SDE sub-steps that must share one
    path) or "brownian_gpu" (that tree on the latent's device, ComfyUI's ``*_gpu`` names):
    whichever ComfyUI's function draws; see :func:`nodes.sampling.noise.make_noise_sampler`.
    ``discard_penultimate_sigma``: ComfyUI computes steps+1 sigmas for these and drops the
    second-to-last one (they would otherwise spend a step at the tiny sigma_min).
    """

    fn: Callable[..., torch.Tensor]
    noise: str | None = None
    discard_penultimate_sigma: bool = False


SAMPLERS: dict[str, SamplerSpec] = {
    "euler": SamplerSpec(classic.sample_euler),
    "euler_ancestral": SamplerSpec(classic.sample_euler_ancestral, noise="gaussian"),
    "heun": SamplerSpec(classic.sample_heun),
    "dpm_2": SamplerSpec(classic.sample_dpm_2, discard_penultimate_sigma=True),
    "dpm_2_ancestral": SamplerSpec(classic.sample_dpm_2_ancestral, noise="gaussian", discard_penultimate_sigma=True),
    "lms": SamplerSpec(classic.sample_lms),
    "dpmpp_2s_ancestral": SamplerSpec(dpmpp.sample_dpmpp_2s_ancestral, noise="gaussian"),
    "dpmpp_sde": SamplerSpec(dpmpp.sample_dpmpp_sde, noise="brownian"),
    "dpmpp_2m": SamplerSpec(dpmpp.sample_dpmpp_2m),
    "dpmpp_2m_sde": SamplerSpec(dpmpp.sample_dpmpp_2m_sde, noise="brownian"),
    "dpmpp_3m_sde": SamplerSpec(dpmpp.sample_dpmpp_3m_sde, noise="brownian"),
    "ddpm": SamplerSpec(classic.sample_ddpm, noise="gaussian"),
    "lcm": SamplerSpec(classic.sample_lcm, noise="gaussian"),
    "ipndm": SamplerSpec(classic.sample_ipndm),
    "deis": SamplerSpec(multistep.sample_deis),
    "ddim": SamplerSpec(classic.sample_ddim),
    "uni_pc": SamplerSpec(multistep.sample_uni_pc, discard_penultimate_sigma=True),
    "uni_pc_bh2": SamplerSpec(multistep.sample_uni_pc_bh2, discard_penultimate_sigma=True),
}

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)


def get_sampler(name: str) -> SamplerSpec:
    """The :class:`SamplerSpec` for ComfyUI sampler ``name``; ``ValueError`` if not implemented."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown or unsupported sampler {name!r}; available: {', '.join(SAMPLER_NAMES)}") from None
