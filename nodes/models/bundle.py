"""The result of loading a checkpoint: every model part plus what a sampler needs to know."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from nodes.models.detect import CheckpointInfo


@dataclass
class LoadedCheckpoint:
    """A loaded Stable Diffusion checkpoint, all parts in eval mode with gradients off.

    - ``family``: ``"sd1"``, ``"sd2"`` or ``"sdxl"``.
    - ``unet``: diffusers ``UNet2DConditionModel``. Input: latent ``[B, in_channels, H/8, W/8]``,
      timestep (0..999, training-schedule index), ``encoder_hidden_states`` ``[B, 77k, context_dim]``
      (SDXL also ``added_cond_kwargs={"text_embeds": [B, 1280], "time_ids": [B, 6]}``).
      Output ``.sample`` ``[B, 4, H/8, W/8]``: noise (eps) or velocity (v), per ``prediction_type``.
    - ``vae``: diffusers ``AutoencoderKL`` (None when the file has no ``first_stage_model``).
      Images in ``[-1, 1]`` ``[B, 3, H, W]`` <-> latents ``[B, 4, H/8, W/8]``, *unscaled*.
    - ``vae_scale_factor``: multiply VAE latents by this before the UNet (0.18215 SD1/SD2,
      0.13025 SDXL); divide before decoding.
    - ``text_encoders``/``tokenizers``/``text_encoder_layouts``: one per encoder, in order
      (SDXL: CLIP-L ``CLIPTextModel`` hidden 768, then OpenCLIP bigG ``CLIPTextModelWithProjection``
      hidden 1280 whose ``text_embeds`` is the pooled output). Layout ``"hf"`` pads with
      ``<|endoftext|>``, ``"open_clip"`` with id 0. SD1 uses the last hidden state; SD2's encoder
      is already cut to 23 layers; SDXL conditions on ``hidden_states[-2]`` of both encoders.
    - ``prediction_type``: ``"epsilon"`` or ``"v_prediction"``; ``scheduler_config``: a diffusers
      scheduler config dict (betas scaled_linear 0.00085..0.012, 1000 training steps).
    - ``in_channels``: UNet input channels (9 for inpainting models).
    """

    family: str
    unet: UNet2DConditionModel
    vae: AutoencoderKL | None
    text_encoders: tuple[CLIPTextModel | CLIPTextModelWithProjection, ...]
    tokenizers: tuple[CLIPTokenizer, ...]
    text_encoder_layouts: tuple[str, ...]
    prediction_type: str
    scheduler_config: dict[str, Any]
    vae_scale_factor: float
    in_channels: int
    dtype: torch.dtype
    device: torch.device
    source: Path
    info: CheckpointInfo | None = field(default=None, repr=False)
