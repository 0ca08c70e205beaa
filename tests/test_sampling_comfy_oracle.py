"""Our samplers against latents recorded from ComfyUI's own samplers (issue 20).

``tests/data/comfy_sampler_oracle.safetensors`` was written by
``tools/record_comfy_sampler_oracle.py`` from a ComfyUI source checkout (version and
commit in its metadata): ComfyUI's noise preparation, KSampler sigma planning and sampler
functions run on an analytic model (two Gaussian data denoisers under CFG, defined in that
tool), for every ComfyUI sampler x normal/karras x batch 1/3 x two seeds, plus img2img,
KSamplerAdvanced start/end/add-noise and ``batch_index`` runs of the noise-using samplers,
and inpainting (noise mask) runs.
Here the same settings go through our planning (``denoise_sigmas`` / ``advanced_sigmas``)
and ``run_sampler`` with the same model, and must give the same latents to float
tolerance: same seed, same noise (starting, Gaussian per-step, torchsde Brownian), same
steps.  Every sampler name we list must have been recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from nodes.sampling import (
    SAMPLER_NAMES,
    advanced_sigmas,
    calculate_sigmas,
    denoise_sigmas,
    run_sampler,
    sd_schedule,
)
from tools.record_comfy_sampler_oracle import CFG, case_latent, case_mask, cond_uncond

ORACLE = Path(__file__).parent / "data" / "comfy_sampler_oracle.safetensors"
SCHEDULE = sd_schedule()
# ComfyUI computes step coefficients in float32 tensors where we use float64 floats, and
# sums in another order: differences of a few float32 ulps of values up to ~15 per step
ATOL, RTOL = 2e-4, 1e-4


def _load() -> tuple[dict[str, str], list[dict[str, Any]], dict[str, torch.Tensor]]:
    with safe_open(str(ORACLE), framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    return metadata, json.loads(metadata["cases"]), tensors


METADATA, CASES, TENSORS = _load()


class GuidedGaussian:
    """The oracle's model: CFG over the exact cond/uncond Gaussian denoisers.  Also offers
    ``with_uncond`` (the CFG++ samplers' view), as our CFGDenoiser does."""

    def with_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cond, uncond = cond_uncond(x, sigma)
        return uncond + (cond - uncond) * CFG, uncond

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.with_uncond(x, sigma)[0]


def our_sigmas(case: dict[str, Any]) -> torch.Tensor:
    """The sigmas our KSampler / KSamplerAdvanced planning gives for the case's settings."""
    if case["start_step"] is None and case["last_step"] is None:
        return denoise_sigmas(SCHEDULE, case["scheduler"], case["sampler"], case["steps"], case["denoise"])
    full = calculate_sigmas(SCHEDULE, case["scheduler"], case["sampler"], case["steps"])
    return advanced_sigmas(full, case["start_step"], case["last_step"],
                           return_with_leftover_noise=not case["force_full_denoise"])


def our_run(case: dict[str, Any], seed: int | None = None) -> torch.Tensor:
    return run_sampler(GuidedGaussian(), case_latent(case), our_sigmas(case), case["sampler"], schedule=SCHEDULE,
                       seed=case["seed"] if seed is None else seed, add_noise=case["add_noise"],
                       batch_index=case["batch_index"], noise_mask=case_mask(case))


def _describe(case: dict[str, Any]) -> str:
    keys = ("sampler", "scheduler", "batch", "seed", "steps", "denoise", "start_step", "last_step",
            "force_full_denoise", "add_noise", "batch_index", "latent", "mask")
    return ", ".join(f"{k}={case[k]}" for k in keys)


def test_oracle_records_where_it_came_from() -> None:
    assert METADATA["comfyui_version"] not in ("", "unknown")
    assert len(METADATA["comfyui_commit"]) == 40
    assert {c["scheduler"] for c in CASES} >= {"normal", "karras"} and {c["batch"] for c in CASES} >= {1, 3}


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_sampler_reproduces_comfyui(sampler: str) -> None:
    cases = [c for c in CASES if c["sampler"] == sampler]
    assert cases, f"no ComfyUI runs of {sampler!r} recorded; re-run tools/record_comfy_sampler_oracle.py"
    for case in cases:
        expected_sigmas = TENSORS[f"{case['key']}.sigmas"]
        sigmas = our_sigmas(case)
        assert sigmas.shape == expected_sigmas.shape, _describe(case)
        assert torch.allclose(sigmas, expected_sigmas, rtol=1e-5, atol=1e-6), _describe(case)
        expected = TENSORS[f"{case['key']}.out"]
        out = our_run(case)
        assert out.shape == expected.shape, _describe(case)
        error = (out - expected).abs().max().item()
        assert torch.allclose(out, expected, rtol=RTOL, atol=ATOL), f"{_describe(case)}: max |diff| {error:.3g}"


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"])
def test_another_seed_is_far_outside_the_tolerance(sampler: str) -> None:
    """The comparison can fail: a run with a neighbouring seed misses the recording by far
    more than the tolerance, for the per-step noise of each kind (Gaussian and Brownian)."""
    case = next(c for c in CASES if c["sampler"] == sampler and c["latent"] == "img2img")
    expected = TENSORS[f"{case['key']}.out"]
    assert torch.allclose(our_run(case), expected, rtol=RTOL, atol=ATOL)
    assert (our_run(case, seed=case["seed"] + 1) - expected).abs().max().item() > 100 * ATOL


def test_node_output_applies_a_soft_mask_once() -> None:
    """After sampling (which already applied the mask), the node gives the latent back exactly
    where the mask is 0 and the sampler's result, unscaled, everywhere else: blending a soft
    mask in again, as before, moved the partially masked pixels away from ComfyUI's."""
    from nodes.sd.sample import _unscaled

    latent = {"samples": torch.randn(1, 4, 3, 3, generator=torch.Generator("cpu").manual_seed(1))}
    mask = case_mask({"mask": True})
    result = torch.randn(1, 4, 3, 3, generator=torch.Generator("cpu").manual_seed(2))
    scale = 0.18215
    out = _unscaled(result, scale, latent, mask)
    resized = torch.nn.functional.interpolate(mask.reshape(1, 1, 6, 6), size=(3, 3), mode="bilinear").expand(1, 4, 3, 3)
    assert ((resized > 0) & (resized < 1)).any()  # the case has partially masked pixels
    assert torch.equal(out[resized == 0], latent["samples"][resized == 0])
    assert torch.equal(out[resized > 0], (result / scale)[resized > 0])
