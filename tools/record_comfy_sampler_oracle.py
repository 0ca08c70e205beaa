"""Record what ComfyUI's own samplers produce, as test data for ours (a developer tool).

Runs ComfyUI's sampling code from a ComfyUI source checkout on a small analytic model and
writes the final latents to ``tests/data/comfy_sampler_oracle.safetensors``;
``tests/test_sampling_comfy_oracle.py`` then checks that our samplers reproduce them.
Nothing here runs at test time, and no ComfyUI code is copied into this project: the
checkout lives in a throwaway directory and is imported from there.

The path through ComfyUI is its own from ``comfy.sample.sample`` down: ``prepare_noise``
(seed, ``batch_index``), ``KSampler`` (schedulers, discarded penultimate sigma, denoise,
start/end steps, forced full denoise), ``KSAMPLER.sample`` (noise scaling, max-denoise,
inpaint wrapper) and the k-diffusion / UniPC sampler functions with ``extra_args["seed"]``,
so their Gaussian and torchsde Brownian-tree noise is ComfyUI's.  The guider (conditioning,
model loading, latent-format scaling) is replaced by the analytic model below, which goes
through ComfyUI's ``sampling_function`` so that CFG and post-CFG hooks (CFG++ samplers)
are ComfyUI's too.  The few modules that part of ComfyUI imports but never uses on this
path (model management, hooks, patcher extensions, ...) are stubbed inside this process.

The model: two Gaussian data distributions N(mu, s^2) per element whose exact denoisers
are known in closed form, a "cond" and an "uncond" one, combined with classifier-free
guidance at ``CFG``.  It is smooth and cheap, and every sampler maps noise through it
deterministically given the seed.

Usage (any Python with torch, torchsde, scipy, tqdm, einops, numpy, e.g. this project's .venv)::

    git --git-dir=PATH/TO/ComfyUI.git archive v0.3.64 | tar -x -C /tmp/comfyui-v0.3.64
    .venv/bin/python tools/record_comfy_sampler_oracle.py /tmp/comfyui-v0.3.64 --commit SHA
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "data" / "comfy_sampler_oracle.safetensors"

# --- the analytic model (also used by the test) -----------------------------------------

COND = (0.5, 1.0)  # (mu, s) of the "cond" data distribution
UNCOND = (-0.3, 1.3)  # (mu, s) of the "uncond" one
CFG = 2.5  # not 1, so ComfyUI evaluates both sides on every call
LATENT_SHAPE = (4, 3, 3)  # [C, h, w] of one batch item: small test data, real channel count


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor, mu: float, s: float) -> torch.Tensor:
    """Exact x0 estimate E[x0 | x] for data N(mu, s^2) per element: ``x`` [B, C, h, w],
    ``sigma`` [B]; (s^2 x + sigma^2 mu) / (s^2 + sigma^2), same shape as ``x``."""
    sg = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return (s * s * x + sg * sg * mu) / (s * s + sg * sg)


def cond_uncond(x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's (cond, uncond) x0 estimates, each [B, C, h, w], for ``x`` [B, C, h, w]."""
    return gaussian_denoiser(x, sigma, *COND), gaussian_denoiser(x, sigma, *UNCOND)


# --- the cases ---------------------------------------------------------------------------

SCHEDULERS = ("normal", "karras")
BATCHES = (1, 3)
SEEDS = (42, 2**40 + 17)  # a large seed too: the generator and torchsde take it whole
STEPS = 6
NOISE_PLUMBING_SAMPLERS = ("euler_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde")
# inpainting: a noise mask; ddim because ComfyUI re-noises the kept region with its own noise
MASK_SAMPLERS = ("euler", "ddim", "euler_ancestral", "dpmpp_2m_sde", "dpmpp_sde")


def img2img_latent(batch: int) -> torch.Tensor:
    """A fixed non-empty starting latent [batch, C, h, w] for the img2img / advanced cases."""
    return torch.randn((batch, *LATENT_SHAPE), generator=torch.Generator("cpu").manual_seed(7)) * 0.8 + 0.2


def cases(sampler_names: list[str]) -> list[dict[str, Any]]:
    """Every recorded run as a dict of KSampler / KSamplerAdvanced settings.

    The grid: every sampler x normal/karras x batch 1/3 x two seeds, txt2img from an empty
    latent.  Then, for the noise-using samplers, the paths where the noise plumbing differs:
    img2img at denoise < 1, KSamplerAdvanced start/end steps with and without added noise
    and leftover noise, and a latent with a ``batch_index``; and inpainting runs (a noise
    mask) at full and partial denoise.
    """
    out: list[dict[str, Any]] = []
    base = {"steps": STEPS, "denoise": 1.0, "start_step": None, "last_step": None,
            "force_full_denoise": False, "add_noise": True, "batch_index": None, "latent": "empty",
            "mask": False}
    for sampler in sampler_names:
        for scheduler in SCHEDULERS:
            for batch in BATCHES:
                for seed in SEEDS:
                    out.append({**base, "sampler": sampler, "scheduler": scheduler, "batch": batch, "seed": seed})
    for sampler in NOISE_PLUMBING_SAMPLERS:
        common = {**base, "sampler": sampler, "scheduler": "karras", "batch": 2, "seed": 5, "latent": "img2img"}
        out.append({**common, "denoise": 0.55})
        out.append({**common, "steps": 8, "start_step": 2, "last_step": 6, "force_full_denoise": True})
        out.append({**common, "steps": 8, "start_step": 3, "last_step": 20, "add_noise": False})
        out.append({**common, "steps": 8, "start_step": 0, "last_step": 5, "force_full_denoise": False})
        out.append({**base, "sampler": sampler, "scheduler": "normal", "batch": 3, "seed": 9,
                    "batch_index": [2, 0, 2]})
    for sampler in MASK_SAMPLERS:
        common = {**base, "sampler": sampler, "scheduler": "karras", "batch": 2, "seed": 11, "latent": "img2img",
                  "mask": True}
        out.append(common)
        out.append({**common, "denoise": 0.6})
    for i, case in enumerate(out):
        case["key"] = f"{i:04d}"
    return out


def case_mask(case: dict[str, Any]) -> torch.Tensor | None:
    """The case's noise mask (1 = regenerate) [1, 6, 6], at a higher resolution than the
    latent and with fractional values so that resizing it matters; None without one."""
    if not case.get("mask"):
        return None
    ramp = torch.linspace(-0.5, 1.5, 6).clamp(0, 1)
    return ramp.expand(6, 6).unsqueeze(0).contiguous()


def case_latent(case: dict[str, Any]) -> torch.Tensor:
    """The LATENT samples a case starts from: zeros (EmptyLatentImage) or :func:`img2img_latent`."""
    if case["latent"] == "empty":
        return torch.zeros((case["batch"], *LATENT_SHAPE))
    return img2img_latent(case["batch"])


# --- importing ComfyUI -------------------------------------------------------------------

# Modules comfy.samplers / comfy.sample / k-diffusion import but never use on the path taken
# here; each becomes an empty module whose attributes are inert placeholders.
STUBBED = ("comfy.model_management", "comfy.sampler_helpers", "comfy.model_patcher", "comfy.patcher_extension",
           "comfy.hooks", "comfy.context_windows", "comfy.ldm.util")


class _Inert:
    """Stands in for anything a stubbed module is asked for (only ever touched, never used)."""

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return self

    def __getattr__(self, name: str) -> _Inert:
        return self


def _stub_attribute(name: str) -> _Inert:
    """A stubbed module's attribute: inert, except dunders (``__file__`` and the like), which
    must stay missing for tools such as ``inspect`` that probe every loaded module."""
    if name.startswith("__"):
        raise AttributeError(name)
    return _Inert()


def _set_post_cfg_function(model_options: dict, fn: Callable, disable_cfg1_optimization: bool = False) -> dict:
    """What ``comfy.model_patcher.set_model_options_post_cfg_function`` does to the options
    dict (its CFG++ samplers call it): append ``fn`` to the post-CFG hooks."""
    model_options["sampler_post_cfg_function"] = model_options.get("sampler_post_cfg_function", []) + [fn]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def import_comfy(checkout: Path) -> dict[str, Any]:
    """Import ComfyUI's sampling modules from ``checkout``; returns them by name."""
    if not (checkout / "comfy" / "k_diffusion" / "sampling.py").is_file():
        raise SystemExit(f"{checkout} is not a ComfyUI source checkout (no comfy/k_diffusion/sampling.py)")
    for name in STUBBED:
        module = types.ModuleType(name)
        module.__getattr__ = _stub_attribute  # type: ignore[method-assign]
        sys.modules[name] = module
    sys.modules["comfy.model_patcher"].set_model_options_post_cfg_function = _set_post_cfg_function
    sys.modules["comfy.model_management"].intermediate_device = lambda: torch.device("cpu")
    sys.path.insert(0, str(checkout))
    for name in STUBBED:
        # a module found in sys.modules is not bound on its package by the import system
        parent, _, leaf = name.rpartition(".")
        setattr(importlib.import_module(parent), leaf, sys.modules[name])
    import comfy.model_sampling  # importable only from here on
    import comfy.sample
    import comfy.samplers
    import comfy.utils

    return {"model_sampling": comfy.model_sampling, "sample": comfy.sample, "samplers": comfy.samplers,
            "utils": comfy.utils}


def comfy_version(checkout: Path, commit: str | None) -> tuple[str, str]:
    """(ComfyUI's ``__version__``, its commit: ``commit`` or the checkout's git HEAD)."""
    namespace: dict[str, Any] = {}
    version_file = checkout / "comfyui_version.py"
    if version_file.is_file():
        exec(version_file.read_text(), namespace)  # a one-line generated file of the checkout
    if commit is None:
        try:
            commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], check=True,
                                    capture_output=True, text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
    return str(namespace.get("__version__", "unknown")), commit


class _BaseModel:
    """What ComfyUI's sampler functions read off ``model.inner_model.inner_model``."""

    def __init__(self, model_sampling: Any) -> None:
        self.model_sampling = model_sampling

    def scale_latent_inpaint(self, sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor,
                             **kwargs: Any) -> torch.Tensor:
        """The kept region's model input: the latent noised to ``sigma`` (what an SD1
        BaseModel does, through the model sampling's own noise scaling)."""
        return self.model_sampling.noise_scaling(sigma.reshape([sigma.shape[0]] + [1] * (noise.ndim - 1)), noise,
                                                 latent_image)


class _Patcher:
    """What ComfyUI reads off the ModelPatcher on this path."""

    def __init__(self, model_sampling: Any) -> None:
        self.model_sampling = model_sampling
        self.load_device = torch.device("cpu")
        self.model_options: dict[str, Any] = {}

    def get_model_object(self, name: str) -> Any:
        if name != "model_sampling":
            raise KeyError(name)
        return self.model_sampling


class _Guider:
    """Plays ComfyUI's CFGGuider for the sampler: ``guider(x, sigma, model_options, seed)``
    runs ComfyUI's ``sampling_function`` with the analytic (cond, uncond) predictions."""

    def __init__(self, samplers: Any, patcher: _Patcher) -> None:
        self.samplers = samplers
        self.model_patcher = patcher
        self.inner_model = _BaseModel(patcher.model_sampling)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict | None = None,
                 seed: int | None = None) -> torch.Tensor:
        options = dict(model_options or {})
        options["sampler_calc_cond_batch_function"] = lambda args: list(cond_uncond(args["input"], args["sigma"]))
        return self.samplers.sampling_function(self.inner_model, x, sigma, "uncond", "cond", CFG,
                                               model_options=options, seed=seed)


def run_case(comfy: dict[str, Any], case: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(final latent [B, C, h, w], the sigmas the sampler got) of one case, the ComfyUI way."""
    samplers, sample = comfy["samplers"], comfy["sample"]
    ms = comfy["model_sampling"]
    model_sampling = type("ModelSampling", (ms.ModelSamplingDiscrete, ms.EPS), {})()
    patcher = _Patcher(model_sampling)
    latent = case_latent(case)
    if case["add_noise"]:
        noise = sample.prepare_noise(latent, case["seed"], case["batch_index"])
    else:
        noise = torch.zeros(latent.size(), dtype=latent.dtype, device="cpu")
    seen: dict[str, torch.Tensor] = {}

    def guided_sample(model, noise, positive, negative, cfg, device, sampler, sigmas, model_options=None,
                      latent_image=None, denoise_mask=None, callback=None, disable_pbar=False, seed=None):
        # stands in for comfy.samplers.sample -> CFGGuider: straight to the sampler object,
        # with the noise mask resized to the latent as the guider resizes it
        seen["sigmas"] = sigmas.clone()
        if denoise_mask is not None:
            denoise_mask = comfy["utils"].reshape_mask(denoise_mask, noise.shape)
        extra_args = {"model_options": {}, "seed": seed}
        return sampler.sample(_Guider(samplers, patcher), sigmas, extra_args, callback, noise, latent_image,
                              denoise_mask, disable_pbar)

    samplers.sample = guided_sample
    out = sample.sample(patcher, noise, case["steps"], CFG, case["sampler"], case["scheduler"], "cond", "uncond",
                        latent, denoise=case["denoise"], disable_noise=not case["add_noise"],
                        start_step=case["start_step"], last_step=case["last_step"],
                        force_full_denoise=case["force_full_denoise"], noise_mask=case_mask(case), disable_pbar=True,
                        seed=case["seed"])
    return out.to(torch.float32).contiguous(), seen.get("sigmas", torch.zeros(0)).to(torch.float32).contiguous()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkout", type=Path, help="a ComfyUI source checkout (throwaway directory)")
    parser.add_argument("--commit", help="the checkout's commit, recorded with the data (default: its git HEAD)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    checkout = args.checkout.resolve()
    version, commit = comfy_version(checkout, args.commit)
    comfy = import_comfy(checkout)
    names = list(comfy["samplers"].SAMPLER_NAMES)
    tensors: dict[str, torch.Tensor] = {}
    recorded = []
    torch.set_num_threads(1)  # reproducible float sums across machines
    for case in cases(names):
        out, sigmas = run_case(comfy, case)
        tensors[f"{case['key']}.out"] = out
        tensors[f"{case['key']}.sigmas"] = sigmas
        recorded.append(case)
    metadata = {"comfyui_version": version, "comfyui_commit": commit, "cases": json.dumps(recorded),
                "model": json.dumps({"cond": COND, "uncond": UNCOND, "cfg": CFG, "latent_shape": LATENT_SHAPE}),
                "torch": torch.__version__, "torchsde": _version_of("torchsde")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=metadata)
    print(f"ComfyUI {version} ({commit}): {len(recorded)} runs of {len(names)} samplers -> {args.out}")
    return 0


def _version_of(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    raise SystemExit(main())
