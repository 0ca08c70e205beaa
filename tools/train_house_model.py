"""Train the house model from scratch on the CPU and write it as an SD1.x-layout checkpoint.

Three stages, each resumable (state under ``--workdir``; rerunning the command continues
where it stopped):

1. ``vae``: an ``AutoencoderKL`` with SD's layout (downscale 8, 4 latent channels, small
   widths) learns to reconstruct 48x48 crops of the drawn 128x128 images, most of them
   centred on the shape (L1 + MSE, a fixed small latent noise and a light L2 pull on the
   latents). Every 1000 steps, reconstructions of held-out scenes are read back with the
   evaluation's pixel reader.
2. ``latents``: ``--images`` drawings of training scenes are encoded once; their posterior
   means and scene ids are kept, so the diffusion stage never runs the encoder. The
   latent scale (SD's 0.18215) is measured here: ``1 / std`` of the latents.
3. ``diffusion``: a small ``UNet2DConditionModel`` (eps prediction, SD's scaled-linear betas
   over 1000 steps) and a small CLIP-architecture text encoder on the real CLIP tokenizer are
   trained together; 10% of captions are dropped to "" for classifier-free guidance and 10%
   are shortened (some attributes left out). Min-SNR loss weighting with a floor, half of each
   batch at the noisiest timesteps, extra weight on the shape's latent cells and a linear
   caption probe on the text encoder (each explained where it is used) push the model to
   learn kind and place, not only colours; a little offset noise helps such plain-coloured
   images; an EMA of the weights is what gets exported.

``export`` writes ``models/checkpoints/latentgraph-house-v1.safetensors``: the SD1.x LDM key
layout with the architecture config in the ``latentgraph.config`` metadata, weights stored
as fp16 (the loader casts to the run-time dtype). Nothing here downloads anything.

Usage::

    python tools/train_house_model.py            # all stages, resumes if interrupted
    python tools/train_house_model.py --stage export

Run time on the 2-core CPU is recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nodes.models.ldm_writer import save_ldm_checkpoint  # noqa: E402
from nodes.models.tokenizers import bundled_clip_tokenizer  # noqa: E402
from tools import house_data  # noqa: E402

DEFAULT_OUT = ROOT / "models" / "checkpoints" / "latentgraph-house-v1.safetensors"
BOS, EOS, CONTEXT = 49406, 49407, 77

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [16, 32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    # Wide groups: GroupNorm over one or two channels per group normalises a plain-coloured
    # patch to zero, and these images are mostly plain colour.
    "norm_num_groups": 4,
    "sample_size": house_data.SIZE,
}
TEXT_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": CONTEXT,
    "hidden_act": "quick_gelu",
    "projection_dim": 64,
    "bos_token_id": BOS,
    "eos_token_id": EOS,
    "pad_token_id": EOS,
}
UNET_CONFIG = {
    "sample_size": house_data.SIZE // 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [48, 96, 96],
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "cross_attention_dim": TEXT_CONFIG["hidden_size"],
    "norm_num_groups": 4,  # wide groups keep a plain latent's level (see VAE_CONFIG)
}
LAYOUT_WEIGHT_FLOOR = 0.25  # least x0-loss weight of a diffusion step (see train_diffusion)
HIGH_NOISE_FROM = 500  # half of each diffusion batch has timesteps from here to the last
SHAPE_WEIGHT = 4.0  # extra loss weight of the latent cells the shape covers (see shape_weights)
LATENT_NOISE = 0.05  # std of the noise the decoder is trained with (in unscaled latent units)
# SD1's noise schedule: scaled-linear betas, 1000 training steps.
BETA_START, BETA_END, TRAIN_STEPS = 0.00085, 0.012, 1000


def alphas_cumprod() -> torch.Tensor:
    """``[1000]`` cumulative products of ``1 - beta`` for SD's scaled-linear schedule."""
    betas = torch.linspace(BETA_START**0.5, BETA_END**0.5, TRAIN_STEPS, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


def images_to_tensor(images: list) -> torch.Tensor:
    """PIL images -> ``float [B, 3, H, W]`` in [-1, 1]."""
    array = np.stack([house_data.to_array(im) for im in images]).astype(np.float32)
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def draw_batch(scenes: list, rng: random.Random, count: int) -> tuple[torch.Tensor, list[int]]:
    """``count`` random training scenes drawn: ``(pixels [B, 3, 128, 128], scene indices)``."""
    picks = [rng.randrange(len(scenes)) for _ in range(count)]
    return images_to_tensor([house_data.render(scenes[i], rng) for i in picks]), picks


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------- stage 1: VAE


def train_vae(workdir: Path, steps: int, seed: int, device: torch.device) -> AutoencoderKL:
    """Train (or resume, or just load) the autoencoder; returns it in eval mode."""
    path = workdir / "vae.pt"
    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    step = 0
    if path.exists():
        state = torch.load(path, weights_only=True, map_location="cpu")
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
    scenes, _ = house_data.split_scenes()
    rng = random.Random(seed * 1000 + step)
    start = time.perf_counter()
    while step < steps:
        lr = 3e-4 * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        pixels = draw_batch(scenes, rng, 12)[0].to(device)
        pixels = shape_crops(pixels, rng)
        # A nearly deterministic autoencoder: the posterior mean plus a fixed small noise
        # (LATENT_NOISE), which export writes into the posterior's log-variance, and a
        # light L2 pull on the latents instead of SD's KL term. Sampling with the
        # untrained log-variance (std ~1) drowns the mean at the start and stalls training.
        mean = vae.encode(pixels).latent_dist.mean
        recon = vae.decode(mean + LATENT_NOISE * torch.randn_like(mean)).sample
        rec = F.l1_loss(recon, pixels) + F.mse_loss(recon, pixels)
        kl = mean.pow(2).mean()
        loss = rec + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0 or step == steps:
            log(f"vae step {step}/{steps} rec {rec.item():.4f} latent l2 {kl.item():.3f} "
                f"({(time.perf_counter() - start) / 60:.1f} min this run)")
        if step % 200 == 0 or step == steps:
            torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, path)
        if step % 1000 == 0 or step == steps:
            log(f"vae step {step} reconstructions read back: {format_accuracy(reconstruction_accuracy(vae, device))}")
            vae.train()
    return vae.eval()


CROP = 48  # px; a multiple of 8, so crops keep the full image's 8x8 latent grid


def shape_crops(pixels: torch.Tensor, rng: random.Random, centred: float = 0.8) -> torch.Tensor:
    """``[B, 3, CROP, CROP]`` crops of ``[B, 3, 128, 128]`` drawings, most of them around the shape.

    The autoencoder is convolutional, so crops cost a seventh of whole images; centring most
    of them on the shape (found as the pixels unlike the corner) spends the steps on edges and
    small shapes, the hard part, instead of on plain background.
    """
    crops = []
    limit = pixels.shape[-1] - CROP
    for image in pixels:
        if rng.random() < centred:
            differs = (image - image[:, :1, :1]).abs().amax(dim=0) > 0.1
            ys, xs = torch.nonzero(differs, as_tuple=True)
            cy, cx = (int(ys.float().mean()), int(xs.float().mean())) if len(ys) else (64, 64)
            y = min(max(cy - CROP // 2 + rng.randint(-12, 12), 0), limit) // 8 * 8
            x = min(max(cx - CROP // 2 + rng.randint(-12, 12), 0), limit) // 8 * 8
        else:
            y, x = rng.randrange(0, limit + 1, 8), rng.randrange(0, limit + 1, 8)
        crops.append(image[:, y:y + CROP, x:x + CROP])
    return torch.stack(crops)


def format_accuracy(accuracy: dict[str, float]) -> str:
    return " ".join(f"{name} {value:.0%}" for name, value in accuracy.items())


def read_back_accuracy(images: torch.Tensor, scenes: list) -> dict[str, float]:
    """Share of ``images`` (``[B, 3, 128, 128]`` in [-1, 1]) whose pixels read back as ``scenes``."""
    from tools import house_measure

    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return house_measure.accuracy([house_measure.read_image(array) for array in pixels], scenes)


def reconstruction_accuracy(vae: AutoencoderKL, device: torch.device, count: int = 100) -> dict[str, float]:
    """How well the autoencoder keeps what the evaluation measures: held-out scenes, full size."""
    _, held_out = house_data.split_scenes()
    scenes = held_out[:count]
    rng = random.Random(12345)
    pixels = images_to_tensor([house_data.render(s, rng) for s in scenes]).to(device)
    vae.eval()
    with torch.inference_mode():
        recon = torch.cat([vae.decode(vae.encode(chunk).latent_dist.mean).sample for chunk in pixels.split(25)])
    return read_back_accuracy(recon, scenes)


# ---------------------------------------------------------------- stage 2: latents


def encode_dataset(workdir: Path, vae: AutoencoderKL, count: int, seed: int, device: torch.device) -> dict:
    """Draw and encode ``count`` training images once; cached in ``latents.pt``."""
    path = workdir / "latents.pt"
    if path.exists():
        return torch.load(path, weights_only=True, map_location="cpu")
    scenes, _ = house_data.split_scenes()
    rng = random.Random(seed + 7)
    means, ids = [], []
    with torch.inference_mode():
        for start in range(0, count, 128):
            pixels, picks = draw_batch(scenes, rng, min(128, count - start))
            means.append(vae.encode(pixels.to(device)).latent_dist.mean.cpu())
            ids.extend(picks)
    mean = torch.cat(means)
    scale = float(1.0 / mean.std())
    data = {"mean": mean, "scene": torch.tensor(ids), "scale": torch.tensor(scale)}
    torch.save(data, path)
    log(f"encoded {count} images; latent std {mean.std().item():.3f} -> scale {scale:.5f}")
    return data


# ---------------------------------------------------------------- stage 3: diffusion


class CaptionTokens:
    """Caption -> ``[77]`` token ids as our CLIPTextEncode feeds SD1 (start, tokens, end, end-padding)."""

    def __init__(self) -> None:
        self.tokenizer = bundled_clip_tokenizer("hf")

    @lru_cache(maxsize=100_000)  # noqa: B019 - one instance per run; captions repeat a lot
    def __call__(self, text: str) -> tuple[int, ...]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: CONTEXT - 2]
        ids = [BOS, *ids, EOS]
        return tuple(ids + [EOS] * (CONTEXT - len(ids)))


def training_caption(scene: house_data.Scene, rng: random.Random) -> str:
    """10% empty (for guidance), 10% shortened, else the full caption."""
    roll = rng.random()
    if roll < 0.1:
        return ""
    if roll < 0.2:
        return scene.partial_caption(rng)
    return scene.caption()


# What a caption can say, in the order of CaptionProbe's outputs.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": house_data.SHAPES, "color": tuple(house_data.COLORS), "background": tuple(house_data.COLORS),
    "place": tuple(house_data.PLACES), "size": tuple(house_data.SIZES),
}
CAPTION_LOSS_WEIGHT = 0.05  # weight of CaptionProbe's loss beside the diffusion loss
IGNORED = -100  # cross-entropy label of an attribute the caption does not say


def caption_labels(caption: str, scene: house_data.Scene) -> list[int]:
    """Per attribute of ``ATTRIBUTES``: the index of the scene's value where ``caption`` says it, else IGNORED."""
    said = {
        "shape": bool(caption), "color": bool(caption), "background": "background" in caption,
        "place": ", " in caption, "size": caption.startswith(("a small", "a large")),
    }
    return [values.index(getattr(scene, name)) if said[name] else IGNORED for name, values in ATTRIBUTES.items()]


class CaptionProbe(torch.nn.Module):
    """A linear read-out of every attribute from the text encoder's pooled (end-of-text) state.

    Trained beside the diffusion loss and thrown away at export. Without it the text encoder,
    learning only from the UNet, kept the place words' states within ~5% of each other, so
    the UNet never used them (place stayed at chance after 5,000 steps while colours reached
    98%); a UNet cannot learn to use words the encoder does not tell apart.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.read_out = torch.nn.Linear(width, sum(len(v) for v in ATTRIBUTES.values()))

    def loss(self, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of ``labels`` (``[B, len(ATTRIBUTES)]``) given ``pooled`` (``[B, width]``)."""
        logits = self.read_out(pooled).split([len(v) for v in ATTRIBUTES.values()], dim=1)
        return sum(F.cross_entropy(part, labels[:, i], ignore_index=IGNORED) for i, part in enumerate(logits))


def build_diffusion_models(seed: int) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    text = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    return unet, text


def shape_weights(x0: torch.Tensor) -> torch.Tensor:
    """``[B, 1, h, w]`` loss weights: 1 on the background, ``1 + SHAPE_WEIGHT`` where the shape is.

    The shape covers a few percent of the latent, so where it goes (place) and its outline
    (kind) are a small part of a plain loss; weighting its cells makes them count. The
    background is the median of the latent's border cells; shape cells are those far from it.
    """
    border = torch.cat([x0[:, :, 0], x0[:, :, -1], x0[:, :, 1:-1, 0], x0[:, :, 1:-1, -1]], dim=2)
    background = border.median(dim=2).values[:, :, None, None]
    distance = (x0 - background).abs().amax(dim=1, keepdim=True)
    shape = distance > 0.25 * distance.amax(dim=(2, 3), keepdim=True).clamp(min=1e-3)
    return 1.0 + SHAPE_WEIGHT * shape.float()


def train_diffusion(workdir: Path, data: dict, steps: int, batch: int, seed: int, device: torch.device,
                    vae: AutoencoderKL | None = None, lr_peak: float = 4e-4) -> dict:
    """Train UNet + text encoder jointly (resumable); returns the EMA weights."""
    path = workdir / "diffusion.pt"
    unet, text = (m.to(device) for m in build_diffusion_models(seed))
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=4e-4, weight_decay=1e-4)
    probe = CaptionProbe(TEXT_CONFIG["hidden_size"]).to(device)
    probe_opt = torch.optim.AdamW(probe.parameters(), lr=4e-4, weight_decay=1e-4)
    ema = {"unet": copy.deepcopy(unet.state_dict()), "text": copy.deepcopy(text.state_dict())}
    step = 0
    if path.exists():
        state = torch.load(path, weights_only=True, map_location="cpu")
        unet.load_state_dict(state["unet"])
        text.load_state_dict(state["text"])
        opt.load_state_dict(state["opt"])
        if "probe" in state:  # checkpoints from before the probe start it fresh
            probe.load_state_dict(state["probe"])
            probe_opt.load_state_dict(state["probe_opt"])
        ema = {name: {k: v.to(device) for k, v in part.items()} for name, part in state["ema"].items()}
        step = state["step"]
    scenes, _ = house_data.split_scenes()
    tokens = CaptionTokens()
    ac = alphas_cumprod().to(device)
    scale = float(data["scale"])
    rng = random.Random(seed * 1000 + step)
    gen = torch.Generator().manual_seed(seed * 1000 + step)
    unet.train()
    text.train()
    start, losses = time.perf_counter(), []
    while step < steps:
        lr = lr_peak * min(1.0, (step + 1) / 300) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in (*opt.param_groups, *probe_opt.param_groups):
            group["lr"] = lr
        idx = torch.randint(0, data["mean"].shape[0], (batch,), generator=gen)
        noise0 = torch.randn(data["mean"][idx].shape, generator=gen)
        x0 = ((data["mean"][idx] + LATENT_NOISE * noise0) * scale).to(device)
        shown = [scenes[int(data["scene"][i])] for i in idx]
        captions = [training_caption(scene, rng) for scene in shown]
        ids = torch.tensor([tokens(c) for c in captions], device=device)
        labels = torch.tensor([caption_labels(c, scene) for c, scene in zip(captions, shown, strict=True)],
                              device=device)
        # Half of each batch at the noisiest steps, where place and kind are decided: drawn
        # uniformly, the model learned colours within 3,000 steps but left place to the noise.
        t = torch.randint(0, TRAIN_STEPS, (batch,), generator=gen)
        noisiest = torch.randint(HIGH_NOISE_FROM, TRAIN_STEPS, (batch,), generator=gen)
        t = torch.where(torch.arange(batch) < batch // 2, noisiest, t).to(device)
        noise = (torch.randn(x0.shape, generator=gen) + 0.05 * torch.randn(batch, 4, 1, 1, generator=gen)).to(device)
        a = ac[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        encoded = text(input_ids=ids)
        pred = unet(noisy, t, encoder_hidden_states=encoded.last_hidden_state).sample
        snr = ac[t] / (1 - ac[t])
        # Min-SNR-5 in x0 terms, with a floor: an eps loss weighs the clean image by the SNR, which
        # nearly vanishes at the noisiest steps, where the layout (place, kind) is decided. The floor
        # (LAYOUT_WEIGHT_FLOOR) keeps those steps' x0 weight from falling below it.
        weight = torch.clamp(snr, min=LAYOUT_WEIGHT_FLOOR, max=5.0) / snr
        loss = (weight * (shape_weights(x0) * (pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        caption_loss = probe.loss(encoded.pooler_output, labels)
        opt.zero_grad(set_to_none=True)
        probe_opt.zero_grad(set_to_none=True)
        (loss + CAPTION_LOSS_WEIGHT * caption_loss).backward()
        # Clipped apart, so the probe's early large gradients never shrink the UNet's steps.
        torch.nn.utils.clip_grad_norm_(list(unet.parameters()), 1.0)
        torch.nn.utils.clip_grad_norm_(list(text.parameters()) + list(probe.parameters()), 1.0)
        opt.step()
        probe_opt.step()
        step += 1
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, model in (("unet", unet), ("text", text)):
                for key, value in model.state_dict().items():
                    if value.dtype.is_floating_point:
                        ema[name][key].mul_(decay).add_(value, alpha=1 - decay)
                    else:
                        ema[name][key].copy_(value)
        losses.append((loss.item(), caption_loss.item()))
        if step % 100 == 0 or step == steps:
            minutes = (time.perf_counter() - start) / 60
            mean_loss, mean_caption = np.mean(losses, axis=0)
            log(f"diffusion step {step}/{steps} loss {mean_loss:.4f} caption probe {mean_caption:.3f} lr {lr:.2e} "
                f"({minutes:.1f} min this run)")
            losses = []
        if step % 500 == 0 or step == steps:
            state = {"unet": unet.state_dict(), "text": text.state_dict(), "opt": opt.state_dict(),
                     "probe": probe.state_dict(), "probe_opt": probe_opt.state_dict(), "ema": ema, "step": step}
            torch.save(state, workdir / "diffusion.tmp")
            (workdir / "diffusion.tmp").replace(path)
        if vae is not None and (step % 1000 == 0 or step == steps):
            accuracy = sample_accuracy(ema, vae, scale, seed, device)
            log(f"diffusion step {step} held-out samples (EMA, 20 DDIM steps, cfg 5) read back: "
                f"{format_accuracy(accuracy)}")
    return ema


def sample_accuracy(ema: dict, vae: AutoencoderKL, scale: float, seed: int, device: torch.device,
                    count: int = 50, steps: int = 20, cfg: float = 5.0) -> dict[str, float]:
    """A quick look during training: sample held-out captions with the EMA weights (DDIM) and read them back.

    The real evaluation (``tools/eval_house_model.py``) runs the exported checkpoint through the
    engine; this one only tells whether training is getting there.
    """
    unet, text = (m.to(device).eval() for m in build_diffusion_models(seed))
    unet.load_state_dict(ema["unet"])
    text.load_state_dict(ema["text"])
    scenes = house_data.held_out_sample(count)
    tokens = CaptionTokens()
    ac = alphas_cumprod().to(device)
    times = torch.linspace(TRAIN_STEPS - 1, 0, steps).round().long()
    with torch.inference_mode():
        ids = torch.tensor([tokens(s.caption()) for s in scenes] + [tokens("")], device=device)
        states = text(input_ids=ids).last_hidden_state
        context = torch.cat([states[:-1], states[-1:].expand(count, -1, -1)])
        x = torch.randn(count, 4, house_data.SIZE // 8, house_data.SIZE // 8,
                        generator=torch.Generator().manual_seed(seed + 99)).to(device)
        for i, t in enumerate(times):
            eps_cond, eps_uncond = unet(torch.cat([x, x]), t.to(device), encoder_hidden_states=context).sample.chunk(2)
            eps = eps_uncond + cfg * (eps_cond - eps_uncond)
            a = ac[t]
            a_next = ac[times[i + 1]] if i + 1 < steps else torch.tensor(1.0, device=device)
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        images = torch.cat([vae.decode(chunk / scale).sample for chunk in x.split(20)])
    return read_back_accuracy(images, scenes)


# ---------------------------------------------------------------- export


def export(workdir: Path, out: Path, seed: int) -> Path:
    """Write the EMA models as one fp16 SD1 LDM-layout checkpoint with its config in metadata."""
    vae = AutoencoderKL(**VAE_CONFIG, scaling_factor=float(torch.load(workdir / "latents.pt", weights_only=True, map_location="cpu")["scale"]))
    vae.load_state_dict(torch.load(workdir / "vae.pt", weights_only=True, map_location="cpu")["model"])
    with torch.no_grad():  # the posterior std is the fixed training noise (see train_vae)
        channels = VAE_CONFIG["latent_channels"]
        vae.quant_conv.weight[channels:] = 0.0
        vae.quant_conv.bias[channels:] = 2.0 * math.log(LATENT_NOISE)
    state = torch.load(workdir / "diffusion.pt", weights_only=True, map_location="cpu")
    unet, text = build_diffusion_models(seed)
    unet.load_state_dict(state["ema"]["unet"])
    text.load_state_dict(state["ema"]["text"])
    for model in (vae, unet, text):
        model.half()
    meta = {
        "latentgraph.model": "latentgraph-house-v1",
        "latentgraph.training": json.dumps({"diffusion_steps": state["step"], "seed": seed}),
        "modelspec.title": "Latentgraph house model v1",
        "modelspec.resolution": f"{house_data.SIZE}x{house_data.SIZE}",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_ldm_checkpoint(out, "sd1", unet, vae, [text], metadata=meta, store_arch_config=True,
                        prediction_type="epsilon")
    log(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "house")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--stage", choices=("all", "vae", "latents", "diffusion", "export"), default="all")
    parser.add_argument("--vae-steps", type=int, default=14000)
    parser.add_argument("--images", type=int, default=30_000)
    parser.add_argument("--steps", type=int, default=16000, help="diffusion training steps")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=6e-4, help="peak learning rate of the diffusion stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    if args.stage in ("all", "vae", "latents", "diffusion"):
        vae = train_vae(args.workdir, args.vae_steps, args.seed, device)
        log(f"vae ready after {(time.perf_counter() - began) / 60:.1f} min")
        if args.stage != "vae":
            data = encode_dataset(args.workdir, vae, args.images, args.seed, device)
            log(f"latents ready after {(time.perf_counter() - began) / 60:.1f} min")
            if args.stage != "latents":
                train_diffusion(args.workdir, data, args.steps, args.batch, args.seed, device, vae=vae, lr_peak=args.lr)
                log(f"diffusion done after {(time.perf_counter() - began) / 60:.1f} min")
    if args.stage in ("all", "export"):
        export(args.workdir, args.out, args.seed)
    log(f"total {(time.perf_counter() - began) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
