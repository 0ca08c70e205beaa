"""Train the house ControlNet on the CPU: the house model's shapes placed by an edge map or silhouette.

The ControlNet is diffusers' ``ControlNetModel.from_unet`` on the house UNet as our loader
loads it from ``models/checkpoints/latentgraph-house-v1.safetensors`` (so it starts as a
copy of the UNet's encoder half, zero convolutions at zero); the house UNet, VAE and text
encoder stay frozen. Only the ControlNet learns.

Data (``data`` stage, cached in ``--workdir``/data.pt): ``--images`` layouts
(``tools.house_hints``) of training scenes only (``house_data.split_scenes``; a layout
whose scene is held out is drawn again): half at the house world's nine places and two
sizes, half anywhere at any radius (so the hint, not the caption, says where). Each is
drawn, encoded once by the house VAE (posterior mean), and given its hint: the edges of the
drawing, as the ``Canny`` node makes them with its default thresholds (kornia), for 40% of
them; the edges of the same shape drawn black on white for another 40% (and for any drawing
whose colours are too alike in brightness for Canny to find most of its outline); the
shape's silhouette, white on black, for the remaining 20% (a mask as a hint needs no Canny).

Diffusion (``train`` stage): eps loss with the house recipe's weighting (min-SNR-5 with an
x0 floor, half of each batch at t >= 500, extra weight on the shape's latent cells), the
caption's states from the frozen text encoder; captions are the full caption (60%), the
caption without place and size (30%: the hint must say them), or empty (10%, for
classifier-free guidance). AdamW, linear warm-up then cosine decay. Every
``--save-every`` steps the state is saved (a run cut short resumes from it) and an fp16
ControlNet is exported to ``--workdir``/controlnet.safetensors, usable at once.

``export`` writes the standard SD1 LDM ControlNet layout (``control_model.*`` keys, fp16,
its diffusers config in the ``latentgraph.config`` metadata since the house UNet's four
norm groups cannot be seen in the shapes) that ``nodes.controlnet`` loads.

Recipe (the defaults; seeded, so a rerun from scratch draws the same data and batches)::

    nice -n 10 python tools/train_house_controlnet.py --images 5000 --steps 3000 --batch 16 --lr 5e-4 --seed 0 \
        --threads 2
    python tools/train_house_controlnet.py --stage export --out models/controlnet/latentgraph-house-edges-v1.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import ControlNetModel
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nodes.controlnet.keymap import controlnet_key_map  # noqa: E402
from nodes.models.detect import CONFIG_METADATA_KEY  # noqa: E402
from nodes.models.keymap import scatter, with_prefix  # noqa: E402
from nodes.models.loader import load_checkpoint  # noqa: E402
from tools import house_data, house_hints  # noqa: E402
from tools.train_house_model import (  # noqa: E402
    HIGH_NOISE_FROM,
    LATENT_NOISE,
    LAYOUT_WEIGHT_FLOOR,
    TRAIN_STEPS,
    CaptionTokens,
    alphas_cumprod,
    shape_weights,
)

HOUSE = ROOT / "models" / "checkpoints" / "latentgraph-house-v1.safetensors"
DEFAULT_OUT = ROOT / "models" / "controlnet" / "latentgraph-house-edges-v1.safetensors"
WEAK_EDGES = 0.3  # a drawing's edges count as missing below this share of its sketch's edge pixels
SILHOUETTE_SHARE = 0.2  # of the hints that are the filled shape rather than its edges


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_house(path: Path = HOUSE) -> tuple:
    """``(unet, vae, text encoder, latent scale)`` of the house model in fp32, frozen, in eval mode."""
    ckpt = load_checkpoint(path, dtype=torch.float32, keep_file_precision=())
    models = (ckpt.unet, ckpt.vae, ckpt.text_encoders[0])
    for model in models:
        model.eval().requires_grad_(False)
    return (*models, ckpt.vae_scale_factor)


def training_layout(train: set[house_data.Scene], train_list: list[house_data.Scene], rng: random.Random
                    ) -> house_hints.Layout:
    """A layout of a training scene: half as the house world draws it, half anywhere."""
    while True:
        scene = train_list[rng.randrange(len(train_list))]
        if rng.random() < 0.5:
            return house_hints.scene_layout(scene, rng)
        layout = house_hints.free_layout(scene.shape, scene.color, scene.background, rng)
        if layout.scene in train:  # never a held-out attribute combination
            return layout


def make_hints(layouts: list[house_hints.Layout], rng: random.Random) -> torch.Tensor:
    """``uint8 [B, 1, 128, 128]`` 0/255 hints: the edges of the drawing (40%) or of the sketch
    (40%), or the shape's silhouette, white on black (``SILHOUETTE_SHARE``)."""
    drawn = house_hints.canny_edges(house_hints.to_unit([house_hints.drawing(x) for x in layouts]))
    sketched = house_hints.canny_edges(house_hints.to_unit([house_hints.sketch(x) for x in layouts]))
    filled = torch.from_numpy(np.stack([house_hints.silhouette(x) for x in layouts])).float()[:, None]
    weak = drawn.sum(dim=(1, 2, 3)) < WEAK_EDGES * sketched.sum(dim=(1, 2, 3))
    rolls = torch.tensor([rng.random() for _ in layouts])
    use_silhouette = rolls < SILHOUETTE_SHARE
    use_drawing = (rolls >= (1 + SILHOUETTE_SHARE) / 2) & ~weak
    hints = torch.where(use_drawing[:, None, None, None], drawn, sketched)
    hints = torch.where(use_silhouette[:, None, None, None], filled, hints)
    return (hints * 255).round().to(torch.uint8)


def build_data(workdir: Path, count: int, seed: int, vae: torch.nn.Module) -> dict:
    """Draw, encode and hint ``count`` layouts once; cached in ``data.pt``."""
    path = workdir / "data.pt"
    if path.exists():
        return torch.load(path, weights_only=True, map_location="cpu")
    train_list, _ = house_data.split_scenes()
    train = set(train_list)
    rng = random.Random(seed + 11)
    latents, hints, scenes = [], [], []
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, count, 64):
            layouts = [training_layout(train, train_list, rng) for _ in range(min(64, count - first))]
            pixels = house_hints.to_unit([house_hints.drawing(x) for x in layouts]) * 2 - 1
            latents.append(vae.encode(pixels).latent_dist.mean)
            hints.append(make_hints(layouts, rng))
            scenes.extend(json.dumps(list(x.scene.__dict__.values())) for x in layouts)
    data = {"latent": torch.cat(latents), "hint": torch.cat(hints), "scenes": scenes}
    torch.save(data, path)
    log(f"drew and encoded {count} layouts in {time.perf_counter() - start:.0f} s")
    return data


def caption_for(scene: house_data.Scene, rng: random.Random) -> str:
    """60% the full caption, 30% without place and size (the hint says them), 10% empty."""
    roll = rng.random()
    if roll < 0.1:
        return ""
    if roll < 0.4:
        return f"a {scene.color} {scene.shape} on a {scene.background} background"
    return scene.caption()


def new_controlnet(unet: torch.nn.Module) -> ControlNetModel:
    """The standard SD ControlNet for ``unet``: its encoder half copied, zero convolutions at zero."""
    return ControlNetModel.from_unet(unet)


def train(workdir: Path, data: dict, unet: torch.nn.Module, text: torch.nn.Module, scale: float, steps: int,
          batch: int, lr_peak: float, seed: int, save_every: int, stop_at: int | None = None) -> ControlNetModel:
    """Train (or resume) the ControlNet; returns it. ``steps`` is the learning-rate schedule's
    length; ``stop_at`` ends the run earlier on the same schedule (the committed model's recipe)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "train.pt"
    torch.manual_seed(seed)
    net = new_controlnet(unet)
    opt = torch.optim.AdamW(net.parameters(), lr=lr_peak, weight_decay=1e-4)
    step = 0
    if path.exists():
        state = torch.load(path, weights_only=True, map_location="cpu")
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        log(f"resumed at step {step}")
    scenes = [house_data.Scene(*json.loads(s)) for s in data["scenes"]]
    tokens, ac = CaptionTokens(), alphas_cumprod()
    net.train()
    start, losses = time.perf_counter(), []
    last = min(steps, stop_at or steps)
    while step < last:
        # Seeded by the step, so a run resumed anywhere draws the batches an uninterrupted one does.
        rng = random.Random(seed * 100_003 + step)
        gen = torch.Generator().manual_seed(seed * 100_003 + step)
        lr = lr_peak * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, data["latent"].shape[0], (batch,), generator=gen)
        x0 = (data["latent"][idx] + LATENT_NOISE * torch.randn(batch, 4, 16, 16, generator=gen)) * scale
        hint = (data["hint"][idx].float() / 255).expand(-1, 3, -1, -1)
        captions = [caption_for(scenes[int(i)], rng) for i in idx]
        with torch.no_grad():
            context = text(input_ids=torch.tensor([tokens(c) for c in captions])).last_hidden_state
        # Half of each batch at the noisiest steps, where the layout is decided (house recipe).
        t = torch.randint(0, TRAIN_STEPS, (batch,), generator=gen)
        noisiest = torch.randint(HIGH_NOISE_FROM, TRAIN_STEPS, (batch,), generator=gen)
        t = torch.where(torch.arange(batch) < batch // 2, noisiest, t)
        noise = torch.randn(x0.shape, generator=gen) + 0.05 * torch.randn(batch, 4, 1, 1, generator=gen)
        a = ac[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        down, mid = net(noisy, t, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False)
        pred = unet(noisy, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample
        snr = ac[t] / (1 - ac[t])
        weight = torch.clamp(snr, min=LAYOUT_WEIGHT_FLOOR, max=5.0) / snr
        loss = (weight * (shape_weights(x0) * (pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        if step % 50 == 0 or step == last:
            log(f"step {step}/{steps} loss {np.mean(losses):.4f} lr {lr:.2e} "
                f"({(time.perf_counter() - start) / 60:.1f} min this run)")
            losses = []
        if step % save_every == 0 or step == last:
            torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step}, workdir / "train.tmp")
            (workdir / "train.tmp").replace(path)
            export(net, workdir / "controlnet.safetensors", step, seed)
    return net.eval()


def ldm_tensors(net: ControlNetModel) -> dict[str, torch.Tensor]:
    """``net``'s weights under the LDM ControlNet names (``control_model.*``), fp16."""
    config = {k: v for k, v in dict(net.config).items() if not k.startswith("_")}
    state = {k: v.detach().half().contiguous() for k, v in net.state_dict().items()}
    return scatter(with_prefix(controlnet_key_map(state.keys(), config), "control_model."), state)


def export(net: ControlNetModel, out: Path, step: int, seed: int) -> Path:
    """Write ``net`` as an fp16 SD1 LDM-layout ControlNet with its config in the metadata."""
    config = {k: v for k, v in dict(net.config).items() if not k.startswith("_")}
    meta = {
        CONFIG_METADATA_KEY: json.dumps({"controlnet": config}),
        "latentgraph.model": "latentgraph-house-edges-v1",
        "latentgraph.training": json.dumps({"steps": step, "seed": seed, "base": HOUSE.name}),
        "modelspec.title": "Latentgraph house ControlNet (edges) v1",
        "modelspec.resolution": f"{house_data.SIZE}x{house_data.SIZE}",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file(ldm_tensors(net), str(tmp), metadata=meta)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "house_controlnet")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--stage", choices=("all", "data", "train", "export"), default="all")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--stop-at", type=int, default=None,
                        help="end the run at this step (the schedule still spans --steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    unet, vae, text, scale = load_house()
    data = build_data(args.workdir, args.images, args.seed, vae)
    if args.stage == "data":
        return 0
    if args.stage in ("all", "train"):
        train(args.workdir, data, unet, text, scale, args.steps, args.batch, args.lr, args.seed, args.save_every,
              args.stop_at)
    if args.stage in ("all", "export"):
        state = torch.load(args.workdir / "train.pt", weights_only=True, map_location="cpu")
        net = new_controlnet(unet)
        net.load_state_dict(state["net"])
        out = export(net, args.out, state["step"], args.seed)
        log(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    log(f"total {(time.perf_counter() - began) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
