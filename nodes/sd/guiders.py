"""GUIDER values: a model and its conditioning, turned into ``D(x, sigma) -> x0`` for a latent.

A guider is made by a node (CFGGuider, BasicGuider, DualCFGGuider, or KSampler itself)
before the latent is known; :meth:`Guider.denoiser` resolves the conditioning for the
latent being sampled (areas, masks, an inpainting UNet's extra channels) when the run
starts. Guiders are never changed once made.

A guider holds its MODEL, so it belongs to the output cache's "models" pool: POST /free
``unload_models`` drops cached guiders with the models, instead of a cached guider
keeping an unloaded UNet alive. Its size counts only the conditioning it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from graph.cache import estimate_size
from nodes.controlnet.handle import control_handles
from nodes.controlnet.residuals import ControlRows, ControlSteps, controls_for_uncond
from nodes.sampling import CFGDenoiser, DiscreteDenoiser, concat_conds
from nodes.sampling.custom import DualCFGDenoiser
from nodes.sampling.sampler_base import Model
from nodes.sd.handles import ModelHandle
from nodes.sd.unet_call import conditioning_regions, unet_function


def base_denoiser(model: ModelHandle) -> DiscreteDenoiser:
    """The model's unguided ``D(x, sigma, **cond) -> x0`` (its UNet, schedule and prediction;
    ControlNet rows in ``cond`` get each step's sigma, ``nodes.controlnet.residuals``)."""
    return ControlSteps(DiscreteDenoiser(unet_function(model), model.schedule, model.prediction))


@dataclass(frozen=True, eq=False)
class Guider:
    """Base of the GUIDER values: ``model`` and the conditioning lists of a subclass."""

    cache_pool: ClassVar[str] = "models"  # see the module docstring

    model: ModelHandle

    def denoiser(self, samples: torch.Tensor, concat: torch.Tensor | None, seed: int = 0) -> Model:
        """``D(x, sigma) -> x0`` for latents shaped like ``samples`` [B, C, h, w] (scaled);
        ``concat`` [B, 5, h, w] is a 9-channel inpainting UNet's extra input, else None;
        ``seed`` is the run's noise seed (unCLIP entries noise their image embeddings with it)."""
        raise NotImplementedError

    def regions(self, conditioning: list, samples: torch.Tensor, concat: torch.Tensor | None,
                seed: int = 0) -> list:
        regions = conditioning_regions(conditioning, self.model, samples, concat, seed)
        for region in regions:  # every entry, with a ControlNet or not, so that all join along the batch
            region.cond["control"] = ControlRows.of_entry(region.extras)
        return regions

    def control_handles(self) -> tuple:
        """The ControlNets its conditioning uses (to be on the device with the model)."""
        return control_handles(*(value for value in vars(self).values() if isinstance(value, list)))

    def size_bytes(self) -> int:
        held = [value for name, value in vars(self).items() if name != "model"]
        return estimate_size(held)


@dataclass(frozen=True, eq=False)
class CFGGuider(Guider):
    """Classifier-free guidance between ``positive`` and ``negative`` with scale ``cfg``
    (:class:`~nodes.sampling.denoiser.CFGDenoiser`); what KSampler samples with."""

    positive: list
    negative: list
    cfg: float

    def denoiser(self, samples: torch.Tensor, concat: torch.Tensor | None, seed: int = 0) -> Model:
        return CFGDenoiser(base_denoiser(self.model), self.regions(self.positive, samples, concat, seed),
                           self.regions(controls_for_uncond(self.positive, self.negative), samples, concat, seed),
                           self.cfg)


@dataclass(frozen=True, eq=False)
class BasicGuider(Guider):
    """No guidance: the model's estimate for ``conditioning`` alone (for models distilled
    to need no negative, e.g. Flux-style or turbo models)."""

    conditioning: list

    def denoiser(self, samples: torch.Tensor, concat: torch.Tensor | None, seed: int = 0) -> Model:
        return CFGDenoiser(base_denoiser(self.model), self.regions(self.conditioning, samples, concat, seed), None, 1.0)


@dataclass(frozen=True, eq=False)
class DualCFGGuider(Guider):
    """Two prompts and a negative (:class:`~nodes.sampling.custom.DualCFGDenoiser`)."""

    cond1: list
    cond2: list
    negative: list
    cfg_conds: float
    cfg_cond2_negative: float
    nested: bool = False

    def denoiser(self, samples: torch.Tensor, concat: torch.Tensor | None, seed: int = 0) -> Model:
        return DualCFGDenoiser(base_denoiser(self.model), self.regions(self.cond1, samples, concat, seed),
                               self.regions(self.cond2, samples, concat, seed),
                               self.regions(controls_for_uncond(self.cond1, self.negative), samples, concat, seed),
                               self.cfg_conds,
                               self.cfg_cond2_negative, self.nested, concat_conds)


def guider_model(guider: Any) -> ModelHandle:
    """The MODEL of a GUIDER value, or a clear error for anything else."""
    if not isinstance(guider, Guider):
        raise TypeError(f"expected a GUIDER (CFGGuider, BasicGuider, ...), got {type(guider).__name__}")
    return guider.model
