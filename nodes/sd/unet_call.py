"""Adapts a diffusers UNet to the sampling library's ``unet(x_in, timestep, **cond)`` call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from nodes.sampling.regions import CondRegion, make_region
from nodes.sd.handles import ModelHandle


def unet_function(model: ModelHandle) -> Callable[..., torch.Tensor]:
    """``call(x_in [B, 4, h, w], timestep [B], context [B, T, D], text_embeds?, time_ids?, concat?,
    class_labels?)`` -> the UNet's eps or v prediction [B, 4, h, w], float32 on the model's device.

    SDXL's extra conditioning (pooled text ``text_embeds`` [B, 1280] and size ``time_ids``
    [B, 6]) is passed as diffusers' ``added_cond_kwargs``. ``concat`` [B, in_channels - 4,
    h, w] is appended to the input channels (an inpainting UNet's mask and masked-image
    latent, see :func:`inpaint_concat`). ``class_labels`` [B, adm] is SD2.1-unCLIP's image
    vector (:mod:`nodes.sd.unclip`). ``control`` (``nodes.controlnet.residuals.ControlRows``)
    adds ControlNet residuals, computed from the input before ``concat``.
    """
    def call(x_in: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
             text_embeds: torch.Tensor | None = None, time_ids: torch.Tensor | None = None,
             concat: torch.Tensor | None = None, class_labels: torch.Tensor | None = None,
             control: Any = None) -> torch.Tensor:
        dtype = model.dtype
        residuals = {} if control is None else \
            control.unet_kwargs(model, x_in, timestep, context, text_embeds, time_ids)
        if concat is not None:
            x_in = torch.cat([x_in, concat.to(x_in.device, x_in.dtype)], dim=1)
        if x_in.shape[1] != model.in_channels:
            raise ValueError(f"the UNet takes {model.in_channels} input channels, got {x_in.shape[1]}")
        added = None
        if text_embeds is not None and time_ids is not None:
            added = {"text_embeds": text_embeds.to(model.device, dtype), "time_ids": time_ids.to(model.device, dtype)}
        labels = class_labels.to(model.device, dtype) if class_labels is not None else None
        out = model.unet(x_in.to(model.device, dtype), timestep.to(model.device),
                         encoder_hidden_states=context.to(model.device, dtype), added_cond_kwargs=added,
                         class_labels=labels, return_dict=False, **residuals)[0]
        return out.float()
    return call


def entry_kwargs(cond: torch.Tensor, extras: dict, model: ModelHandle, latent: torch.Tensor,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """One CONDITIONING entry ``[cond [1, T, D], extras]`` -> the keyword tensors of the UNet call.

    SDXL adds ``text_embeds`` (the entry's pooled embedding) and ``time_ids``: the entry's
    ``height``, ``width``, ``crop_h``, ``crop_w``, ``target_height``, ``target_width``
    (CLIPTextEncodeSDXL), each defaulting to the latent's size in pixels (crops to 0).
    An entry's ``unclip_conditioning`` (unCLIPConditioning) becomes SD2.1-unCLIP's
    ``class_labels`` or, on SDXL, the pooled embedding ("revision"), noised with ``seed``
    (the sampling seed; :mod:`nodes.sd.unclip`).
    """
    from nodes.sd.unclip import class_labels, revision_pooled, unclip_width

    if not isinstance(cond, torch.Tensor) or cond.ndim != 3:
        raise ValueError("a conditioning entry must hold a [batch, tokens, width] tensor")
    kwargs = {"context": cond.to(latent.device)}
    adm_width = unclip_width(model.original_unet)
    if adm_width:
        kwargs["class_labels"] = class_labels(extras, adm_width, seed).to(latent.device)
    if model.family == "sdxl":
        revision = revision_pooled(extras, _pooled_width(model.original_unet), seed)
        pooled = revision if revision is not None else extras.get("pooled_output")
        if pooled is None:
            raise ValueError("SDXL needs the pooled text embedding: encode the prompt with an SDXL CLIP")
        height, width = extras.get("height", latent.shape[-2] * 8), extras.get("width", latent.shape[-1] * 8)
        sizes = [height, width, extras.get("crop_h", 0), extras.get("crop_w", 0),
                 extras.get("target_height", height), extras.get("target_width", width)]
        kwargs["text_embeds"] = pooled.to(latent.device)
        kwargs["time_ids"] = torch.tensor([[float(v) for v in sizes]], dtype=torch.float32, device=latent.device)
    return kwargs


def _pooled_width(unet: Any) -> int:
    """The width of an SDXL UNet's pooled text input (its add-embedding input less 6 size ids)."""
    config = unet.config
    return int(config["projection_class_embeddings_input_dim"]) - 6 * int(config["addition_time_embed_dim"])


def conditioning_regions(conditioning: list, model: ModelHandle, latent: torch.Tensor,
                         concat: torch.Tensor | None = None, seed: int = 0) -> list[CondRegion]:
    """A CONDITIONING value (ComfyUI's list of ``[cond, extras]``) -> one
    :class:`~nodes.sampling.regions.CondRegion` per entry for ``latent`` [B, 4, h, w].

    ``concat`` [B, 5, h, w] (an inpainting UNet's extra input) is added to every entry,
    unless the entry carries its own ``concat_latent_image`` (unscaled) and ``concat_mask``
    (InpaintModelConditioning), which a 9-channel UNet then gets instead. ``seed`` (the
    sampling seed) noises unCLIP image embeddings (:func:`entry_kwargs`).
    """
    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError("conditioning is empty: connect a CLIPTextEncode (or another conditioning node)")
    height, width = latent.shape[-2:]
    regions = []
    for entry in conditioning:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[1], dict):
            raise ValueError("each conditioning entry must be [tensor, dict]")
        cond, extras = entry
        kwargs = entry_kwargs(cond, extras, model, latent, seed)
        if extras.get("concat_latent_image") is not None and model.in_channels == 9:
            # InpaintModelConditioning: the entry brings its own masked image and mask
            image = extras["concat_latent_image"].to(latent.device, latent.dtype) * model.latent_scale
            kwargs["concat"] = inpaint_concat(image, extras.get("concat_mask"))
        elif concat is not None:
            kwargs["concat"] = concat
        region = make_region(kwargs, extras, height, width)
        if "start_percent" in extras or "end_percent" in extras:  # ConditioningSetTimestepRange
            schedule = model.schedule
            region = replace(region, sigma_range=(schedule.percent_to_sigma(float(extras.get("start_percent", 0.0))),
                                                  schedule.percent_to_sigma(float(extras.get("end_percent", 1.0)))))
        regions.append(region)
    return regions


# An inpainting UNet's masked-image input where there is no image: what ComfyUI feeds
# (its values for mid-grey pixels in the SD VAE's scaled latent space), per channel.
BLANK_INPAINT_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


def inpaint_concat(latent: torch.Tensor, noise_mask: torch.Tensor | None) -> torch.Tensor:
    """The extra input of a 9-channel inpainting UNet for a scaled ``latent`` [B, 4, h, w]:
    ``cat(mask [B, 1, h, w], masked-image latent [B, 4, h, w])`` (SD-inpainting's layout).

    With a ``noise_mask`` (1 = regenerate; resized bilinearly) the masked-image latent is
    ``latent`` itself, which VAEEncodeForInpaint has already greyed inside the mask. Without
    one the whole image is to be made: mask 1 and a blank (mid-grey) image latent.
    """
    from nodes.sampling import prepare_mask

    if noise_mask is None:
        mask = torch.ones_like(latent[:, :1])
        blank = torch.tensor(BLANK_INPAINT_LATENT, dtype=latent.dtype, device=latent.device)
        return torch.cat([mask, blank.view(1, 4, 1, 1).expand_as(latent)], dim=1)
    mask = prepare_mask(noise_mask, latent)[:, :1]
    return torch.cat([mask, latent], dim=1)
