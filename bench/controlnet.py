"""Cost of a ControlNet per sampling step, against the same step without it (issue 16).

One step is one call of the CFG denoiser KSampler samples with (``nodes.sd.guiders.CFGGuider``:
the UNet on the uncond and cond halves in one batch of 2); with a ControlNet applied to both
halves (ControlNetApplyAdvanced's case) the ControlNet runs once per call on the same batch
and its residuals go into the UNet. Two models: the house model
(``models/checkpoints/latentgraph-house-v1.safetensors``, at its 128x128) and an
SD1.5-shaped UNet with random weights (the bundled SD1 config, 860 M parameters, fp32, at
256x256); each ControlNet is ``ControlNetModel.from_unet`` of that UNet with random zero
convolutions. Two ControlNet variants share those weights: the hint encoded on every call
(diffusers' own forward, the baseline) and encoded once per sampling run
(``nodes.controlnet.hint_encoding``, what the loader sets up), so a step here is a step in
the middle of a run. Calls alternate between the variants within each repeat, so drift of the
machine's load falls on both alike; the fastest of the repeats is the least disturbed
reading (medians printed too). One torch thread by default (the box has 2 shared cores).

    PYTHONPATH=. python bench/controlnet.py [--repeat 5] [--threads 1] [--models house,sd15]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from diffusers import ControlNetModel, UNet2DConditionModel  # noqa: E402

from nodes.controlnet.handle import ControlLink, ControlNetHandle  # noqa: E402
from nodes.controlnet.hint_encoding import accept_encoded_hints  # noqa: E402
from nodes.models.family_config import bundled_configs  # noqa: E402
from nodes.models.loader import load_checkpoint  # noqa: E402
from nodes.sampling import sd_schedule  # noqa: E402
from nodes.sd.guiders import CFGGuider  # noqa: E402
from nodes.sd.handles import ModelHandle  # noqa: E402

HOUSE = ROOT / "models" / "checkpoints" / "latentgraph-house-v1.safetensors"


def _model(name: str) -> tuple[ModelHandle, int]:
    """The MODEL handle and the image size (pixels) of one benchmarked model."""
    if name == "house":
        loaded = load_checkpoint(HOUSE)
        unet, size, source = loaded.unet, 128, HOUSE
    else:
        torch.manual_seed(0)
        unet, size, source = UNet2DConditionModel.from_config(bundled_configs("sd1").unet).eval(), 256, Path("random")
    handle = ModelHandle(unet=unet, family="sd1", prediction="eps", schedule=sd_schedule(), latent_scale=0.18215,
                         in_channels=4, device=torch.device("cpu"), dtype=torch.float32, source=source)
    return handle, size


def _controlnets(unet: UNet2DConditionModel) -> tuple[ControlNetHandle, ControlNetHandle]:
    """The same random ControlNet twice: encoding its hint on every call, and once per run."""
    net = ControlNetModel.from_unet(unet).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("controlnet_down_blocks.", "controlnet_mid_block.")):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    once = copy.deepcopy(net)
    assert accept_encoded_hints(once)
    return tuple(ControlNetHandle(model, "sd1", torch.device("cpu"), torch.float32, Path("random-controlnet"))
                 for model in (net, once))


def bench(name: str, repeat: int) -> dict[str, float]:
    model, size = _model(name)
    every_step, once = _controlnets(model.unet)
    width = model.unet.config.cross_attention_dim
    generator = torch.Generator().manual_seed(2)
    cond, uncond = torch.randn(1, 77, width, generator=generator), torch.randn(1, 77, width, generator=generator)
    hint = (torch.rand(1, 3, size, size, generator=generator) > 0.9).float()
    links = {"every_step": ControlLink(every_step, hint, 1.0), "once": ControlLink(once, hint, 1.0)}
    samples = torch.randn(1, 4, size // 8, size // 8, generator=generator)
    sigma = torch.tensor([model.schedule.percent_to_sigma(0.3)])
    guiders = {
        "plain": CFGGuider(model, [[cond, {}]], [[uncond, {}]], 5.0),
        **{key: CFGGuider(model, [[cond, {"control": link}]], [[uncond, {"control": link}]], 5.0)
           for key, link in links.items()},
    }
    denoisers = {key: guider.denoiser(samples, None) for key, guider in guiders.items()}
    times: dict[str, list[float]] = {key: [] for key in denoisers}
    with torch.inference_mode():
        for denoiser in denoisers.values():  # warm-up
            denoiser(samples, sigma)
        for _ in range(repeat):
            for key, denoiser in denoisers.items():
                start = time.perf_counter()
                denoiser(samples, sigma)
                times[key].append(time.perf_counter() - start)
    unet_params = sum(p.numel() for p in model.unet.parameters())
    net_params = sum(p.numel() for p in once.model.parameters())
    result = {"size": size, "unet_m": unet_params / 1e6, "controlnet_m": net_params / 1e6}
    for key, values in times.items():
        result[f"{key}_min"], result[f"{key}_median"] = min(values), statistics.median(values)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="house,sd15")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| model | image | UNet params | ControlNet params | step without | with, hint encoded each step "
          "| with, hint encoded once | ratio each step (fastest / median) | ratio once (fastest / median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        r = bench(name, args.repeat)
        ratios = {key: f"{r[f'{key}_min'] / r['plain_min']:.2f}x / {r[f'{key}_median'] / r['plain_median']:.2f}x"
                  for key in ("every_step", "once")}
        print(f"| {name} | {r['size']}x{r['size']} | {r['unet_m']:.1f} M | {r['controlnet_m']:.1f} M | "
              f"{r['plain_min'] * 1000:.0f} ms | {r['every_step_min'] * 1000:.0f} ms | {r['once_min'] * 1000:.0f} ms | "
              f"{ratios['every_step']} | {ratios['once']} |", flush=True)


if __name__ == "__main__":
    main()
