"""Same seed, same image? The house model's txt2img sampled by us and by ComfyUI (a developer tool).

The txt2img workflow (``tools/eval_house_model.py``) runs twice through our engine for each
sampler: once as it is, once with the sampling step handed to ComfyUI's own sampling path
from a ComfyUI source checkout (``comfy.sample.sample`` -> ``KSampler`` -> ``KSAMPLER`` ->
its k-diffusion function, with ComfyUI's starting, Gaussian and torchsde Brownian noise for
the seed), driving the same denoiser (our house UNet under CFG).  Both latents are then
decoded and saved by our VAEDecode and SaveImage, and the 8-bit images compared.

ComfyUI's own UNet cannot run the house model (it is built with 4 GroupNorm groups where
ComfyUI's UNet has 32), so what this compares is the sampling: sigmas, noise and solver.
The importing of ComfyUI is ``tools/record_comfy_sampler_oracle.py``'s. For the whole
workflow run by ComfyUI's own nodes (its UNet, CLIP and VAE too) on an SD1.5-layout
checkpoint, see ``tools/compare_comfy_checkpoint.py``.

    .venv/bin/python tools/compare_comfy_house.py /tmp/comfyui-v0.3.64 --samplers dpmpp_2m_sde,dpmpp_sde
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nodes.sd.sample as sample_module  # noqa: E402
from tools.eval_house_model import DEFAULT_CHECKPOINT, HouseRunner  # noqa: E402
from tools.record_comfy_sampler_oracle import _BaseModel, _Patcher, import_comfy  # noqa: E402

CAPTION = "a large green star on a white background, bottom right"


class ComfySampling:
    """Stands in for ``run_sampler`` in our sampler nodes and samples the ComfyUI way."""

    def __init__(self, comfy: dict[str, Any]) -> None:
        self.comfy = comfy
        self.steps, self.scheduler, self.calls = 0, "", 0

    def __call__(self, model: Any, latent: torch.Tensor, sigmas: torch.Tensor, sampler_name: str, *, seed: int,
                 noise: torch.Tensor | None = None, **ignored: Any) -> torch.Tensor:
        """``latent`` [B, C, h, w] in the UNet's space -> ComfyUI's sampled latent, same shape."""
        self.calls += 1
        ms = self.comfy["model_sampling"]
        patcher = _Patcher(type("ModelSampling", (ms.ModelSamplingDiscrete, ms.EPS), {})())
        samplers, sample = self.comfy["samplers"], self.comfy["sample"]
        comfy_noise = sample.prepare_noise(latent.cpu(), seed, None)
        if noise is not None and not torch.equal(noise.cpu(), comfy_noise):
            raise AssertionError("our starting noise differs from ComfyUI's prepare_noise")
        inner = _BaseModel(patcher.model_sampling)

        class Guider:  # what ComfyUI's sampler sees as the model: our denoiser, CFG included
            model_patcher, inner_model = patcher, inner

            def __call__(self, x: torch.Tensor, sigma: torch.Tensor, model_options: Any = None,
                         seed: Any = None) -> torch.Tensor:
                return model(x, sigma)

        def guided_sample(_model, noise, positive, negative, cfg, device, sampler, comfy_sigmas, model_options=None,
                          latent_image=None, denoise_mask=None, callback=None, disable_pbar=False, seed=None):
            if not torch.allclose(comfy_sigmas, sigmas.float().cpu(), rtol=1e-5):
                raise AssertionError(f"sigmas differ: {comfy_sigmas} vs {sigmas}")
            return sampler.sample(Guider(), comfy_sigmas, {"model_options": {}, "seed": seed}, None, noise,
                                  latent_image, denoise_mask, True)

        samplers.sample = guided_sample
        return sample.sample(patcher, comfy_noise, self.steps, 1.0, sampler_name, self.scheduler, None, None,
                             latent.cpu(), denoise=1.0, disable_pbar=True, seed=seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkout", type=Path, help="a ComfyUI source checkout (throwaway directory)")
    parser.add_argument("--samplers", default="dpmpp_2m_sde,dpmpp_3m_sde,dpmpp_sde,euler_ancestral,euler")
    parser.add_argument("--schedulers", default="karras")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    comfy_sampling = ComfySampling(import_comfy(args.checkout.resolve()))
    ours_sampling = sample_module.run_sampler
    worst = 0
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        ours = HouseRunner(DEFAULT_CHECKPOINT, Path(tmp) / "ours")
        # a second engine: the first would serve the same workflow from its output cache
        theirs = HouseRunner(DEFAULT_CHECKPOINT, Path(tmp) / "comfy")
        for sampler in args.samplers.split(","):
            for scheduler in args.schedulers.split(","):
                comfy_sampling.steps, comfy_sampling.scheduler = args.steps, scheduler
                run = {"seed": args.seed, "steps": args.steps, "sampler": sampler, "scheduler": scheduler}
                sample_module.run_sampler = ours_sampling
                a = ours.generate(CAPTION, **run)
                calls = comfy_sampling.calls
                sample_module.run_sampler = comfy_sampling
                try:
                    b = theirs.generate(CAPTION, **run)
                finally:
                    sample_module.run_sampler = ours_sampling
                if comfy_sampling.calls != calls + 1:
                    raise AssertionError("ComfyUI's sampling did not run")
                other = ours.generate(CAPTION, **{**run, "seed": args.seed + 1})
                diff = np.abs(a.astype(int) - b.astype(int))
                worst = max(worst, int(diff.max()))
                print(f"{sampler:24s} {scheduler:8s} max |diff| {diff.max()}/255, {(diff > 0).mean():.4%} of values "
                      f"differ; seed {args.seed + 1} instead: max |diff| "
                      f"{np.abs(a.astype(int) - other.astype(int)).max()}/255", flush=True)
    return 0 if worst <= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
