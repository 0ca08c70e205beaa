"""run_sampler, noise sources, callbacks/interrupts, the eps/v and CFG wrappers, previews."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchsde

from nodes.sampling import (
    SAMPLER_NAMES,
    BrownianTreeNoise,
    CFGDenoiser,
    DiscreteDenoiser,
    GaussianNoise,
    calculate_sigmas,
    get_sampler,
    initial_noise,
    latent_to_image,
    latent_to_rgb,
    make_noise_sampler,
    run_sampler,
    sd_schedule,
)

SCHEDULE = sd_schedule()
MU, S = 0.5, 1.0


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    sg = sigma.reshape(-1, 1, 1, 1)
    return (S * S * x + sg * sg * MU) / (S * S + sg * sg)


class Counting:
    """Wraps a denoiser and counts its calls."""

    def __init__(self, fn) -> None:
        self.fn, self.calls, self.inputs = fn, 0, []

    def __call__(self, x, sigma):
        self.calls += 1
        self.inputs.append(x.clone())
        return self.fn(x, sigma)


def _run(sampler: str, seed: int, steps: int = 6, latent=None, **kw) -> torch.Tensor:
    latent = torch.zeros(2, 4, 8, 8) if latent is None else latent
    sigmas = calculate_sigmas(SCHEDULE, "karras", sampler, steps)
    return run_sampler(gaussian_denoiser, latent, sigmas, sampler, schedule=SCHEDULE, seed=seed, **kw)


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_seed_reproducible_and_seeds_differ(sampler: str) -> None:
    a, b, c = _run(sampler, 42), _run(sampler, 42), _run(sampler, 43)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # batch items get different noise


def test_initial_noise_is_comfyui_convention() -> None:
    expected = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(7))
    assert torch.equal(initial_noise((1, 4, 8, 8), 7), expected)
    # the first model input is latent + noise * sqrt(1 + sigma_max^2) when starting from sigma_max
    model = Counting(gaussian_denoiser)
    latent = torch.full((1, 4, 8, 8), 0.25)
    sigmas = calculate_sigmas(SCHEDULE, "karras", "euler", 3)
    run_sampler(model, latent, sigmas, "euler", schedule=SCHEDULE, seed=7)
    scale = (1 + float(sigmas[0]) ** 2) ** 0.5
    assert torch.allclose(model.inputs[0], latent + expected * scale)
    # part-way (img2img): scaled by sigma itself
    model = Counting(gaussian_denoiser)
    run_sampler(model, latent, sigmas[1:], "euler", schedule=SCHEDULE, seed=7)
    assert torch.allclose(model.inputs[0], latent + expected * float(sigmas[1]))


def test_add_noise_disabled_starts_from_latent() -> None:
    model = Counting(gaussian_denoiser)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    sigmas = calculate_sigmas(SCHEDULE, "karras", "euler", 4)[1:]
    run_sampler(model, latent, sigmas, "euler", schedule=SCHEDULE, seed=0, add_noise=False)
    assert torch.equal(model.inputs[0], latent)


@pytest.mark.parametrize("sigmas", [torch.zeros(0), torch.tensor([0.0]), torch.tensor([3.0])])
def test_zero_length_schedule_returns_input(sigmas: torch.Tensor) -> None:
    latent = torch.randn(1, 4, 8, 8)
    model = Counting(gaussian_denoiser)
    out = run_sampler(model, latent, sigmas, "euler_ancestral", schedule=SCHEDULE, seed=0)
    assert torch.equal(out, latent) and model.calls == 0


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_callback_once_per_step(sampler: str) -> None:
    seen = []
    steps = 5
    out = _run(sampler, 0, steps=steps, callback=lambda i, n, x, d: seen.append((i, n, x.shape, d.shape)))
    total = len(calculate_sigmas(SCHEDULE, "karras", sampler, steps)) - 1
    assert [s[:2] for s in seen] == [(i, total) for i in range(total)]
    assert all(s[2] == out.shape and s[3] == out.shape for s in seen)


class Interrupted(Exception):
    pass


# most samplers make at most two model calls per step; these make three
CALLS_PER_STEP = {"heunpp2": 3, "seeds_3": 3, "dpm_fast": 3}


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_callback_exception_interrupts_within_one_step(sampler: str) -> None:
    model = Counting(gaussian_denoiser)
    calls_at_interrupt = []

    def callback(i, n, x, d):
        if i == 1:
            calls_at_interrupt.append(model.calls)
            raise Interrupted

    spec = get_sampler(sampler)
    sigmas = calculate_sigmas(SCHEDULE, "karras", sampler, 10)
    with pytest.raises(Interrupted):
        run_sampler(model, torch.zeros(1, 4, 8, 8), sigmas, sampler, schedule=SCHEDULE, seed=0, callback=callback)
    assert spec is not None
    assert model.calls == calls_at_interrupt[0]  # nothing ran after the callback raised
    if sampler != "dpm_adaptive":  # which takes as many solver steps as its error needs
        assert model.calls <= 2 * CALLS_PER_STEP.get(sampler, 2)  # two steps' worth: it stopped at i == 1


def test_noise_mask_keeps_unmasked_latent() -> None:
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(64, 64)
    mask[:, 32:] = 1.0  # regenerate the right half (pixel-space mask)
    out = _run("dpmpp_2m", 3, latent=latent, noise_mask=mask)
    assert torch.equal(out[..., :3], latent[..., :3])
    assert not torch.allclose(out[..., 5:], latent[..., 5:])
    model = Counting(gaussian_denoiser)
    sigmas = calculate_sigmas(SCHEDULE, "karras", "euler", 4)
    run_sampler(model, latent, sigmas, "euler", schedule=SCHEDULE, seed=3, noise_mask=mask)
    # each model input outside the mask is the original latent noised to that step's sigma
    noise = initial_noise(latent.shape, 3)
    for x_in, sigma in zip(model.inputs, sigmas[:-1], strict=True):
        assert torch.allclose(x_in[..., :3], (latent + noise * float(sigma))[..., :3], atol=1e-5)


def test_gaussian_noise_sampler_matches_seeded_randn() -> None:
    like = torch.zeros(2, 4, 8, 8)
    ns = GaussianNoise(like, 11)
    gen = torch.Generator("cpu").manual_seed(11)
    assert torch.equal(ns(5.0, 4.0), torch.randn(like.shape, generator=gen))
    assert torch.equal(ns(4.0, 3.0), torch.randn(like.shape, generator=gen))


def test_brownian_noise_is_standard_and_consistent() -> None:
    like = torch.zeros(64, 64, 16)
    ns = BrownianTreeNoise(like, 2, 1.0, 4.0)
    whole = ns(4.0, 1.0)  # interval [1, 4]
    part = ns(4.0, 3.0)  # sub-interval [3, 4], shares the path
    assert abs(whole.mean().item()) < 0.03 and abs(whole.std().item() - 1) < 0.03
    assert abs(part.std().item() - 1) < 0.03
    corr = torch.corrcoef(torch.stack([whole.flatten(), part.flatten()]))[0, 1].item()
    assert corr == pytest.approx((1 / 3) ** 0.5, abs=0.03)  # sqrt(|[3,4]| / |[1,4]|)
    again = BrownianTreeNoise(like, 2, 1.0, 4.0)
    assert torch.equal(again(4.0, 1.0), whole)
    assert not torch.equal(BrownianTreeNoise(like, 3, 1.0, 4.0)(4.0, 1.0), whole)


def test_brownian_noise_is_torchsde_tree_over_the_run_sigmas() -> None:
    """The SDE noise is torchsde's BrownianTree seeded with the seed over [smallest positive
    sigma, largest sigma] at float32 times, read downwards in sigma (ComfyUI's definition)."""
    like = torch.zeros(3, 4, 8, 8)
    sigmas = torch.tensor([14.614642, 6.0, 1.5, 0.029167, 0.0])
    ns = make_noise_sampler("brownian", like, 42, sigmas)
    lo, hi = torch.tensor(0.029167), torch.tensor(14.614642)
    tree = torchsde.BrownianTree(lo, torch.zeros(like.shape), hi, entropy=42)
    a, b = torch.tensor(6.0), torch.tensor(14.614642)
    expected = -tree(a, b) / (b - a).sqrt()  # stepping down from 14.6 to 6.0
    assert torch.equal(ns(14.614642, 6.0), expected)
    assert ns(14.614642, 6.0).shape == like.shape  # one tree for the whole batch
    assert torch.equal(ns(1.5, 1.5), torch.zeros(like.shape))
    assert make_noise_sampler(None, like, 42, sigmas) is None
    with pytest.raises(ValueError):
        make_noise_sampler("pink", like, 42, sigmas)


def _fake_unet(prediction: str, record: list | None = None):
    """A 'UNet' that is exact for Gaussian data: it reads sigma back from the timestep."""

    def unet(x_in: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if record is not None:
            record.append((x_in.shape, timestep.clone(), None if context is None else context.clone()))
        sigma = SCHEDULE.sigma(timestep).reshape(-1, 1, 1, 1)
        x = x_in * (sigma * sigma + 1).sqrt()
        d = (S * S * x + sigma * sigma * MU) / (S * S + sigma * sigma)
        eps = (x - d) / sigma
        if prediction == "eps":
            return eps
        if prediction == "x0":
            return d
        alpha = 1 / (sigma * sigma + 1).sqrt()
        return alpha * eps - sigma * alpha * d  # v = alpha * eps - sigma_vp * x0

    return unet


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_prediction_wrappers_recover_denoiser_and_sample(prediction: str) -> None:
    model = DiscreteDenoiser(_fake_unet(prediction), SCHEDULE, prediction, quantize_timesteps=False)
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 5
    sigma = torch.tensor([0.1, 1.3, 12.0])
    assert torch.allclose(model(x, sigma), gaussian_denoiser(x, sigma), atol=1e-3)
    sigmas = calculate_sigmas(SCHEDULE, "karras", "dpmpp_2m", 30)
    out = run_sampler(model, torch.zeros(4, 4, 32, 32), sigmas, "dpmpp_2m", schedule=SCHEDULE, seed=1)
    assert abs(out.mean().item() - MU) < 0.05 and abs(out.std().item() - S) < 0.05


def test_wrapper_scales_input_and_quantizes_timesteps() -> None:
    record: list = []
    model = DiscreteDenoiser(_fake_unet("eps", record), SCHEDULE, "eps")
    x = torch.ones(1, 4, 8, 8) * 2
    model(x, torch.tensor([SCHEDULE.sigma_max]))
    model(x, torch.tensor([1.0]))
    assert float(record[0][1][0]) == 999.0
    assert float(record[1][1][0]) == round(float(record[1][1][0]))
    with pytest.raises(ValueError):
        DiscreteDenoiser(_fake_unet("eps"), SCHEDULE, "v_prediction")  # the node's name, not the wrapper's


def test_cfg_batches_uncond_and_cond_in_one_call() -> None:
    calls: list = []

    def denoiser(x, sigma, context):
        calls.append((x.shape[0], sigma.clone(), context.clone()))
        return x * 0 + context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)

    cond = {"context": torch.full((1, 154, 8), 2.0)}
    uncond = {"context": torch.full((1, 77, 8), 1.0)}
    x = torch.zeros(2, 4, 8, 8)
    out = CFGDenoiser(denoiser, cond, uncond, cfg=7.5)(x, torch.tensor([3.0, 3.0]))
    assert len(calls) == 1
    batch, sigma, context = calls[0]
    assert batch == 4 and sigma.shape == (4,)
    assert context.shape == (4, 154, 8)  # 77 tokens tiled to 154
    assert torch.equal(context[:2], torch.ones(2, 154, 8)) and torch.equal(context[2:], torch.full((2, 154, 8), 2.0))
    assert torch.allclose(out, torch.full_like(x, 1.0 + 7.5 * (2.0 - 1.0)))
    calls.clear()
    out = CFGDenoiser(denoiser, cond, uncond, cfg=1.0)(x, torch.tensor([3.0, 3.0]))
    assert len(calls) == 1 and calls[0][0] == 2 and calls[0][2].shape == (2, 154, 8)
    assert torch.allclose(out, torch.full_like(x, 2.0))


def test_latent_preview() -> None:
    rgb = latent_to_rgb(torch.zeros(4, 16, 24))
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 24, 3)
    assert (rgb == 128).all()  # zero latent -> mid grey
    one = torch.zeros(1, 4, 4, 4)
    one[0, 0] = 1.0  # SD1 channel 0 -> (0.3512, 0.2297, 0.3227) -> ((v + 1) / 2) * 255
    assert tuple(int(v) for v in latent_to_rgb(one)[0, 0]) == (172, 157, 169)
    assert tuple(int(v) for v in latent_to_rgb(torch.zeros(4, 2, 2), "sdxl")[0, 0]) == (141, 125, 127)  # bias
    img = latent_to_image(torch.randn(4, 64, 96), max_size=32)
    assert img.mode == "RGB" and max(img.size) <= 32
    with pytest.raises(ValueError):
        latent_to_rgb(torch.zeros(4, 2, 2), "flux")
