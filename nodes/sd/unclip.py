"""unCLIP image conditioning: CLIP image embeddings -> the UNet's ADM vector.

unCLIPConditioning appends ``{"clip_vision_output", "strength", "noise_augmentation"}`` to
an entry's ``unclip_conditioning`` list. When sampling starts, each such entry becomes one
vector, as ComfyUI's ``unclip_adm`` makes it:

* every image embedding ``e`` [P] of every item is noise-augmented at level
  ``round(999 * noise_augmentation)`` of its own diffusion schedule (``squaredcos_cap_v2``,
  1000 steps): ``z = sqrt(abar_t) e + sqrt(1 - abar_t) n``, ``n`` drawn from a CPU
  generator seeded with the sampling seed minus 10; the level's sinusoidal embedding
  (width P) is appended and the pair scaled by ``strength``: ``[z, emb(t)] * strength`` [1, 2P];
* several embeddings are summed, and the sum's first half augmented again at the merge
  level (SD2.1-unCLIP: ``unclip_noise_augment_merge``, default 0.05; SDXL: 0).

SD2.1-unCLIP's UNet takes that vector as its class labels (``label_emb``, adm width 2P;
an entry without unCLIP gets zeros). SDXL "revision" puts its first P values (the
augmented embedding, P = 1280 for ViT-bigG) in place of the pooled text embedding.

Where ComfyUI draws the merge noise from torch's global generator (so it depends on what
ran before), this draws it from a generator seeded like the first, so a seed always gives
the same image. The augmentor's data mean/std are 0 and 1, as ComfyUI leaves them (it
never loads a checkpoint's statistics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import torch

MAX_NOISE_LEVEL = 1000
SEED_OFFSET = -10  # ComfyUI augments with the sampling seed minus 10
SD21_MERGE_LEVEL = 0.05  # ComfyUI's SD21UNCLIP default for unclip_noise_augment_merge


@cache
def _schedule(steps: int = MAX_NOISE_LEVEL) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sqrt(abar), sqrt(1 - abar))`` [steps] float32 of the squaredcos_cap_v2 schedule
    (betas from alpha_bar(t) = cos^2(((t + 0.008) / 1.008) pi / 2), capped at 0.999),
    accumulated in float64."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)],
                         dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0)
    return abar.sqrt().float(), (1.0 - abar).sqrt().float()


def level_embedding(level: int, dim: int) -> torch.Tensor:
    """The sinusoidal embedding [1, dim] of a noise level: ``[cos(t f), sin(t f)]`` with
    ``f_i = 10000^(-i / (dim / 2))`` (LDM's timestep embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = float(level) * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def augment(embed: torch.Tensor, amount: float, seed: int) -> torch.Tensor:
    """One embedding [1, P] noised at ``amount`` (0..1 of the schedule), with its level
    embedding appended: [1, 2P], float32 on the CPU."""
    level = round((MAX_NOISE_LEVEL - 1) * amount)
    sqrt_abar, sqrt_one_minus = _schedule()
    x = embed.reshape(1, -1).float().cpu()
    noise = torch.randn(x.shape, dtype=torch.float32, generator=torch.Generator().manual_seed(seed))
    z = sqrt_abar[level] * x + sqrt_one_minus[level] * noise
    return torch.cat([z, level_embedding(level, x.shape[-1])], dim=1)


def unclip_adm(entries: Sequence[Mapping[str, Any]], seed: int, merge_level: float) -> torch.Tensor:
    """The ADM vector [1, 2P] of an entry's ``unclip_conditioning`` list (see the module
    docstring); ``seed`` is the sampling seed."""
    parts = []
    for entry in entries:
        output = entry["clip_vision_output"]
        embeds = output["image_embeds"] if not hasattr(output, "image_embeds") else output.image_embeds
        strength = float(entry["strength"])
        for embed in embeds:
            parts.append(augment(embed, float(entry["noise_augmentation"]), seed + SEED_OFFSET) * strength)
    if not parts:
        raise ValueError("unclip_conditioning holds no image embedding")
    if len(parts) == 1:
        return parts[0]
    total = torch.stack(parts).sum(0)
    width = total.shape[1] // 2
    return augment(total[:, :width], merge_level, seed + SEED_OFFSET)


def unclip_entries(extras: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """An entry's unCLIP list, checked: None when it has none."""
    entries = extras.get("unclip_conditioning")
    if entries is None:
        return None
    if not isinstance(entries, (list, tuple)) or not all(
            isinstance(e, Mapping) and {"clip_vision_output", "strength", "noise_augmentation"} <= set(e)
            for e in entries):
        raise ValueError("unclip_conditioning must be a list of {clip_vision_output, strength, noise_augmentation}")
    return list(entries)


def unclip_width(unet: Any) -> int:
    """The class-label (ADM) width of an SD2.1-unCLIP UNet, 0 for any other UNet."""
    config = getattr(unet, "config", None)
    if config is None or config.get("class_embed_type") != "projection" or config.get("addition_embed_type"):
        return 0
    return int(config.get("projection_class_embeddings_input_dim") or 0)


def class_labels(extras: Mapping[str, Any], width: int, seed: int) -> torch.Tensor:
    """An SD2.1-unCLIP UNet's class labels [1, width] for one entry: zeros without unCLIP."""
    entries = unclip_entries(extras)
    if not entries:
        return torch.zeros(1, width)
    merge = float(extras.get("unclip_noise_augment_merge", SD21_MERGE_LEVEL))
    adm = unclip_adm(entries, seed, merge)
    if adm.shape[1] != width:
        raise ValueError(f"the unCLIP model takes image embeddings {width // 2} wide, the CLIP vision output "
                         f"gives {adm.shape[1] // 2}: use the CLIP vision model that matches the checkpoint")
    return adm


def revision_pooled(extras: Mapping[str, Any], width: int, seed: int) -> torch.Tensor | None:
    """SDXL revision: the pooled vector [1, width] made from an entry's unCLIP list, or None
    when the entry has none (its text's pooled output is used)."""
    entries = unclip_entries(extras)
    if not entries:
        return None
    adm = unclip_adm(entries, seed, 0.0)
    if adm.shape[1] // 2 != width:
        raise ValueError(f"SDXL revision needs image embeddings {width} wide (CLIP ViT-bigG for SDXL), "
                         f"the CLIP vision output gives {adm.shape[1] // 2}")
    return adm[:, :width]
