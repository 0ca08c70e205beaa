"""CFG++ samplers against their defining update, on exact Gaussian denoisers under CFG.

Cond data ~ N(MU_C, S^2), uncond data ~ N(MU_U, S^2): both denoisers are exact, so the
guided estimate D_g = D_u + CFG * (D_c - D_u) and the unconditional D_u are known in
closed form at every step.  CFG++ (Chung et al. 2024, eq. 10) re-noises D_g along the
unconditional noise direction: x_next = D_g + sigma_next * (x - D_u) / sigma.
"""

from __future__ import annotations

import math

import pytest
import torch

from nodes.sampling import CFGDenoiser, calculate_sigmas, get_sampler, run_sampler, sd_schedule
from nodes.sampling.noise import GaussianNoise
from nodes.sampling.sampler_base import ancestral_step, denoise_with_uncond

SCHEDULE = sd_schedule()
MU_C, MU_U, S, CFG = 0.5, -0.3, 1.0, 2.5
CFG_PP = ["euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp",
          "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp", "gradient_estimation_cfg_pp"]


def gaussian_x0(x: torch.Tensor, sigma: torch.Tensor, mu: float) -> torch.Tensor:
    sg = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
    return (S * S * x + sg * sg * mu) / (S * S + sg * sg)


class GuidedGaussian:
    """CFG over the two exact denoisers; ``mu_u = MU_C`` means no guidance at all."""

    def __init__(self, mu_u: float = MU_U) -> None:
        self.mu_u = mu_u
        self.calls = 0

    def with_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        cond, uncond = gaussian_x0(x, sigma, MU_C), gaussian_x0(x, sigma, self.mu_u)
        return uncond + (cond - uncond) * CFG, uncond

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.with_uncond(x, sigma)[0]


def start(sigmas: torch.Tensor) -> torch.Tensor:
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    return MU_C + noise * float(sigmas[0])


def run(name: str, model, sigmas: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    spec = get_sampler(name)
    noise = GaussianNoise(x, 9) if spec.noise else None
    return spec.fn(model, x, sigmas, noise_sampler=noise)


def test_euler_cfg_pp_is_the_papers_update() -> None:
    """Step by step: x_next = D_g + sigma_next * (x - D_u) / sigma (the step to 0 gives D_g)."""
    sigmas = calculate_sigmas(SCHEDULE, "karras", "euler_cfg_pp", 6)
    x = start(sigmas)
    model = GuidedGaussian()
    expected = x
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        d_g, d_u = model.with_uncond(expected, torch.tensor([sigma]))
        expected = d_g + sigma_next * (expected - d_u) / sigma
    assert torch.allclose(run("euler_cfg_pp", model, sigmas, x), expected, atol=1e-10)


def test_dpmpp_2m_cfg_pp_is_its_defining_update() -> None:
    """x_next = D_g + e^-h (x - D_u) + (1 - e^-h) / (2r) * (D_g - D_u,prev) after the first
    step, with h the step in -log(sigma) and r the previous step over this one."""
    sigmas = calculate_sigmas(SCHEDULE, "karras", "dpmpp_2m_cfg_pp", 6)
    x = start(sigmas)
    model = GuidedGaussian()
    sig = sigmas.tolist()
    expected, prev_u = x, None
    for i in range(len(sig) - 1):
        d_g, d_u = model.with_uncond(expected, torch.tensor([sig[i]]))
        if sig[i + 1] == 0:
            expected = d_g
        else:
            ratio = sig[i + 1] / sig[i]  # e^-h
            expected = d_g + ratio * (expected - d_u)
            if prev_u is not None:
                r = math.log(sig[i - 1] / sig[i]) / math.log(sig[i] / sig[i + 1])
                expected = expected + (1 - ratio) / (2 * r) * (d_g - prev_u)
        prev_u = d_u
    assert torch.allclose(run("dpmpp_2m_cfg_pp", model, sigmas, x), expected, atol=1e-10)


@pytest.mark.parametrize("name", [n for n in CFG_PP if n != "dpmpp_2s_ancestral_cfg_pp"])
def test_first_step_is_the_cfg_pp_euler_step(name: str) -> None:
    """Without history every one of these starts with CFG++'s (ancestral) Euler step:
    x_1 = D_g + sigma_down * (x_0 - D_u) / sigma_0 + sigma_up * z."""
    sigmas = calculate_sigmas(SCHEDULE, "karras", name, 6)[:2]
    x = start(sigmas)
    model = GuidedGaussian()
    s0, s1 = float(sigmas[0]), float(sigmas[1])
    eta = 1.0 if "ancestral" in name else 0.0
    down, up = ancestral_step(s0, s1, eta)
    d_g, d_u = model.with_uncond(x, sigmas[:1])
    expected = d_g + down * (x - d_u) / s0
    if up:
        expected = expected + up * GaussianNoise(x, 9)(s0, s1)
    assert torch.allclose(run(name, model, sigmas, x), expected, atol=1e-10)


@pytest.mark.parametrize("name", [n for n in CFG_PP if n != "dpmpp_2s_ancestral_cfg_pp"])
def test_without_guidance_cfg_pp_is_its_base_method(name: str) -> None:
    """With uncond == cond there is no guidance vector and D_u = D_g, so each CFG++ sampler
    takes exactly its base method's steps (and so passes the Gaussian analytic test with it);
    with guidance the two differ.  (Not dpmpp_2s_ancestral_cfg_pp: see below.)"""
    base = name.removesuffix("_cfg_pp")
    sigmas = calculate_sigmas(SCHEDULE, "karras", name, 8)
    x = start(sigmas)
    unguided = run(name, GuidedGaussian(mu_u=MU_C), sigmas, x)
    assert torch.allclose(unguided, run(base, GuidedGaussian(mu_u=MU_C), sigmas, x), atol=1e-9)
    guided = GuidedGaussian()
    assert (run(name, guided, sigmas, x) - run(base, guided, sigmas, x)).abs().max() > 0.05


def test_dpmpp_2s_ancestral_cfg_pp_is_comfyuis_update() -> None:
    """ComfyUI 0.3.64's form, step by step: from y = x + (D_g - D_u) the DPM-Solver++(2S)
    midpoint step runs on guided estimates; the full step starts from x + (D_g - D_u,mid),
    the midpoint's unconditional estimate being the latest one ComfyUI's hook saw.  So even
    without guidance it is not quite the base method: D_g(x) - D_u(x_mid) is not 0."""
    sigmas = calculate_sigmas(SCHEDULE, "karras", "dpmpp_2s_ancestral_cfg_pp", 6)
    x = start(sigmas)
    sig = sigmas.tolist()
    for model in (GuidedGaussian(), GuidedGaussian(mu_u=MU_C)):
        noise = GaussianNoise(x, 9)
        expected = x
        for i in range(len(sig) - 1):
            d_g, d_u = model.with_uncond(expected, torch.tensor([sig[i]]))
            down, up = ancestral_step(sig[i], sig[i + 1])
            if down == 0:
                expected = d_g
            else:
                mid = math.sqrt(sig[i] * down)  # the midpoint in log sigma
                x_mid = mid / sig[i] * (expected + d_g - d_u) + (1 - mid / sig[i]) * d_g
                d_g_mid, d_u_mid = model.with_uncond(x_mid, torch.tensor([mid]))
                expected = down / sig[i] * (expected + d_g - d_u_mid) + (1 - down / sig[i]) * d_g_mid
            if sig[i + 1] > 0:
                expected = expected + up * noise(sig[i], sig[i + 1])
        out = run("dpmpp_2s_ancestral_cfg_pp", model, sigmas, x)
        assert torch.allclose(out, expected, atol=1e-9)
    base = run("dpmpp_2s_ancestral", model, sigmas, x)
    assert (out - base).abs().max() > 1e-3  # the quirk above, without any guidance


def test_cfg_denoiser_gives_the_unconditional_estimate_even_at_cfg_1() -> None:
    """ComfyUI disables its cfg = 1 shortcut for CFG++ samplers; so does with_uncond, in the
    same single batched call.  Plain calls keep the shortcut."""
    seen = []

    def denoiser(x, sigma, context):
        seen.append(x.shape[0])
        return x * 0 + context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)

    cond, uncond = {"context": torch.ones(1, 2, 3)}, {"context": torch.zeros(1, 2, 3)}
    model = CFGDenoiser(denoiser, cond, uncond, cfg=1.0)
    x, sigma = torch.zeros(2, 4, 8, 8), torch.tensor([3.0, 3.0])
    guided, unc = model.with_uncond(x, sigma)
    assert seen == [4] and torch.all(guided == 1) and torch.all(unc == 0)
    assert torch.all(model(x, sigma) == 1) and seen == [4, 2]
    guided, unc = CFGDenoiser(denoiser, cond, uncond, cfg=3.0).with_uncond(x, sigma)
    assert torch.all(guided == 3) and torch.all(unc == 0)
    guided, unc = CFGDenoiser(denoiser, cond, None, cfg=3.0).with_uncond(x, sigma)  # no negative: no guidance
    assert torch.all(guided == 1) and torch.all(unc == 1)


def test_inpainting_mask_keeps_both_estimates_outside_the_mask() -> None:
    """run_sampler's mask wrapper forwards with_uncond, so a CFG++ sampler still sees the
    unconditional estimate, and the unmasked latent comes back exactly."""
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(8, 8)
    mask[:, :4] = 1
    sigmas = calculate_sigmas(SCHEDULE, "karras", "euler_cfg_pp", 6)
    out = {}
    for name in ("euler_cfg_pp", "euler"):
        model = GuidedGaussian()
        out[name] = run_sampler(model, latent, sigmas, name, schedule=SCHEDULE, seed=3, noise_mask=mask)
        assert torch.equal(out[name][..., 4:], latent[..., 4:])
    assert (out["euler_cfg_pp"][..., :4] - out["euler"][..., :4]).abs().max() > 0.05


def test_plain_models_count_as_unguided() -> None:
    x, sigma = torch.ones(1, 4, 2, 2), torch.tensor([2.0])
    guided, uncond = denoise_with_uncond(lambda x, s: x * 0.5, x, sigma)
    assert guided is uncond and torch.all(guided == 0.5)
