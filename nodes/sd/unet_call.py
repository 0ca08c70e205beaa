"""Adapts a diffusers UNet to the sampling library's ``unet(x_in, timestep, **cond)`` call."""

from __future__ import annotations

from collections.abc import Callable

import torch

from nodes.sd.handles import ModelHandle


def unet_function(model: ModelHandle) -> Callable[..., torch.Tensor]:
    """``call(x_in [B, 4, h, w], timestep [B], context [B, T, D], text_embeds?, time_ids?)``
    -> the UNet's eps or v prediction, float32 on the model's device.

    SDXL's extra conditioning (pooled text ``text_embeds`` [B, 1280] and size ``time_ids``
    [B, 6]) is passed as diffusers' ``added_cond_kwargs``.
    """
    def call(x_in: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
             text_embeds: torch.Tensor | None = None, time_ids: torch.Tensor | None = None) -> torch.Tensor:
        dtype = model.dtype
        added = None
        if text_embeds is not None and time_ids is not None:
            added = {"text_embeds": text_embeds.to(model.device, dtype), "time_ids": time_ids.to(model.device, dtype)}
        out = model.unet(x_in.to(model.device, dtype), timestep.to(model.device),
                         encoder_hidden_states=context.to(model.device, dtype), added_cond_kwargs=added,
                         return_dict=False)[0]
        return out.float()
    return call


def conditioning_kwargs(conditioning: list, model: ModelHandle, latent: torch.Tensor) -> dict[str, torch.Tensor]:
    """One CONDITIONING value -> the keyword tensors of the UNet call.

    CONDITIONING is ComfyUI's list of ``[cond [1, T, D], extras]``; combining several
    entries (regional prompts) is not supported yet, so exactly one is expected.
    """
    if len(conditioning) != 1:
        raise ValueError(f"expected one conditioning entry, got {len(conditioning)}: combining conditionings "
                         "is not supported yet")
    cond, extras = conditioning[0]
    kwargs = {"context": cond.to(latent.device)}
    if model.family == "sdxl":
        pooled = extras.get("pooled_output")
        if pooled is None:
            raise ValueError("SDXL needs the pooled text embedding: encode the prompt with an SDXL CLIP")
        height, width = latent.shape[-2] * 8, latent.shape[-1] * 8
        kwargs["text_embeds"] = pooled.to(latent.device)
        kwargs["time_ids"] = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32,
                                          device=latent.device)
    return kwargs
