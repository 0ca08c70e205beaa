"""The one sampling path of every sampler node: noise + guider + sampler + sigmas -> LATENT.

KSampler, KSamplerAdvanced, SamplerCustom and SamplerCustomAdvanced all end in
:func:`sample_latent`; they differ only in how they build the four pieces (see
:mod:`nodes.sampling.custom` and :mod:`nodes.sd.guiders`), so the same settings give the
same image whichever node is used.
"""

from __future__ import annotations

from typing import Any

import torch

from nodes.sampling import latent_to_image, prepare_mask, run_sampler
from nodes.sampling.custom import NoiseSource, SamplerChoice
from nodes.sd.guiders import Guider, guider_model
from nodes.sd.memory import sampling_working_bytes
from nodes.sd.runtime import runtime_of
from nodes.sd.unet_call import inpaint_concat

PREVIEW_SIZE = 256  # longest side of the per-step preview image, in pixels


def sample_latent(context: Any, guider: Guider, sampler: SamplerChoice, sigmas: torch.Tensor, noise: NoiseSource,
                  latent: dict) -> tuple[dict, dict]:
    """Samples ``latent`` along ``sigmas``; returns ``(output, denoised_output)`` LATENTs
    (unscaled, float32 on the CPU).

    ``denoised_output`` holds the model's x0 estimate at the last step (SamplerCustom's
    second output); it is ``output`` when no step ran. Latents are scaled into the UNet's
    space by the model's ``latent_scale`` and back. Every step reports progress with a
    preview and honours interrupts. A latent's ``noise_mask`` (1 = regenerate) keeps the
    rest of the latent exactly; a 9-channel inpainting UNet also gets the mask and
    masked-image latent. No sigmas: the latent comes back unchanged; one sigma: it comes
    back noised to that level, no step taken (both as in ComfyUI).
    """
    if len(sigmas) == 0:
        return latent, latent
    model = guider_model(guider)
    controls = guider.control_handles()
    # a Control-LoRA's network is built while sampling (nodes/controlnet/control_lora.py)
    working = sampling_working_bytes(latent["samples"].shape, model.dtype) + sum(
        net.sampling_bytes(model.dtype) for net in controls)
    # the ControlNets of the conditioning run with the UNet: on the device with it
    with runtime_of(context).placed(model, *controls, working_bytes=working):
        samples = latent["samples"].to(model.device, torch.float32) * model.latent_scale
        mask = latent.get("noise_mask")
        concat = None
        if model.in_channels == 9:
            concat = inpaint_concat(samples, mask.to(model.device) if mask is not None else None)
        elif samples.shape[1] != model.in_channels:
            raise ValueError(f"the latent has {samples.shape[1]} channels but the model takes {model.in_channels}")
        denoiser = guider.denoiser(samples, concat, noise.seed)
        last: dict[str, torch.Tensor] = {}

        def on_step(step: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
            last["x0"] = denoised
            preview = latent_to_image(denoised[0].float().cpu(), model.family, max_size=PREVIEW_SIZE)
            context.progress(step + 1, total, preview)

        start = noise.generate(samples.shape, latent.get("batch_index")).to(model.device, samples.dtype)
        result = run_sampler(denoiser, samples, sigmas, sampler.name, schedule=model.schedule, seed=noise.seed,
                             noise=start, options=sampler.kwargs,
                             noise_mask=mask.to(model.device) if mask is not None else None, callback=on_step)
    out = dict(latent, samples=_unscaled(result, model.latent_scale, latent, mask))
    if "x0" not in last:
        return out, out
    return out, dict(latent, samples=(last["x0"] / model.latent_scale).float().cpu())


def _unscaled(result: torch.Tensor, scale: float, latent: dict, mask: torch.Tensor | None) -> torch.Tensor:
    out = (result / scale).float().cpu()
    if mask is not None:
        # where the mask is 0 give the latent back exactly (dividing by the scale is not
        # exact); a soft mask's partial values were applied while sampling and are not
        # blended in a second time (ComfyUI returns the sampler's result there)
        kept = prepare_mask(mask, out) == 0
        out = torch.where(kept, latent["samples"].float().cpu(), out)
    return out
