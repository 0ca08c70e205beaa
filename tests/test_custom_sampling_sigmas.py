"""SIGMAS operations and explicit schedules, SAMPLER/NOISE values and dual-prompt guidance,
checked against their defining formulas (no model needed)."""

from __future__ import annotations

import math

import pytest
import torch

from nodes.sampling import (
    SAMPLER_NAMES,
    calculate_sigmas,
    denoise_sigmas,
    get_sigmas,
    run_sampler,
    sd_schedule,
)
from nodes.sampling.custom import DualCFGDenoiser, NoiseSource, SamplerChoice
from nodes.sampling.denoiser import concat_conds
from nodes.sampling.regions import make_region
from nodes.sampling.sigma_ops import (
    PERCENT_ZERO_SIGMA,
    basic_sigmas,
    exponential_sigmas,
    flip,
    karras_sigmas,
    laplace_sigmas,
    parse_manual,
    percent_sigma,
    polyexponential_sigmas,
    sd_turbo_sigmas,
    set_first,
    split_at_denoise,
    split_at_step,
    vp_sigmas,
)

SCHEDULE = sd_schedule()
LO, HI = 0.0291675, 14.614642


def test_explicit_karras_and_exponential_are_the_model_schedules_for_sds_range() -> None:
    # the model-based schedulers read the same range from SD's table: same formula, same numbers
    lo, hi = SCHEDULE.sigma_min, SCHEDULE.sigma_max
    assert torch.equal(karras_sigmas(9, lo, hi), get_sigmas("karras", SCHEDULE, 9))
    assert torch.equal(exponential_sigmas(9, lo, hi), get_sigmas("exponential", SCHEDULE, 9))


def test_karras_rho_spacing() -> None:
    sigmas = karras_sigmas(5, LO, HI, rho=3.0)
    assert sigmas.shape == (6,) and sigmas[-1] == 0
    roots = sigmas[:-1].double() ** (1 / 3)
    steps = roots[1:] - roots[:-1]
    torch.testing.assert_close(steps, steps.mean().expand(4), rtol=1e-4, atol=0)
    assert float(sigmas[0]) == pytest.approx(HI, rel=1e-6) and float(sigmas[-2]) == pytest.approx(LO, rel=1e-5)


def test_polyexponential_is_exponential_at_rho_1_and_bends_with_rho() -> None:
    torch.testing.assert_close(polyexponential_sigmas(7, LO, HI, 1.0), exponential_sigmas(7, LO, HI))
    bent = polyexponential_sigmas(7, LO, HI, 2.0)
    # log sigma = log lo + (1 - i/(n-1))^rho (log hi - log lo)
    expected = [math.exp(math.log(LO) + (1 - i / 6) ** 2 * (math.log(HI) - math.log(LO))) for i in range(7)]
    torch.testing.assert_close(bent[:-1], torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=0)


def test_laplace_has_no_final_zero_and_is_clamped() -> None:
    sigmas = laplace_sigmas(10, LO, HI, mu=0.0, beta=0.5)
    assert sigmas.shape == (10,) and float(sigmas.min()) > 0
    assert float(sigmas[0]) == pytest.approx(HI) and float(sigmas[-1]) == pytest.approx(LO)
    assert bool((sigmas[1:] <= sigmas[:-1]).all())
    # the middle quantile of a Laplace(mu, beta) is mu: sigma e^mu at the centre of an odd ramp
    assert float(laplace_sigmas(11, LO, HI, mu=0.3, beta=0.5)[5]) == pytest.approx(math.exp(0.3), rel=1e-4)


def test_vp_schedule_formula() -> None:
    sigmas = vp_sigmas(4, beta_d=19.9, beta_min=0.1, eps_s=1e-3)
    ts = [1.0, 1.0 - (1 - 1e-3) / 3, 1.0 - 2 * (1 - 1e-3) / 3, 1e-3]
    expected = [math.sqrt(math.expm1(19.9 * t * t / 2 + 0.1 * t)) for t in ts] + [0.0]
    torch.testing.assert_close(sigmas, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-7)


def test_sd_turbo_timesteps() -> None:
    table = SCHEDULE.sigmas
    assert torch.equal(sd_turbo_sigmas(SCHEDULE, 1, 1.0), torch.stack([SCHEDULE.sigma(999.0), torch.tensor(0.0)]))
    two = sd_turbo_sigmas(SCHEDULE, 2, 0.5)  # starts 5 entries in: timesteps 499 and 399
    torch.testing.assert_close(two, torch.stack([table[499], table[399], torch.tensor(0.0)]), rtol=1e-6, atol=0)


@pytest.mark.parametrize("denoise", [1.0, 0.75, 0.5, 0.3])
@pytest.mark.parametrize("scheduler", ["normal", "karras", "simple", "beta"])
def test_basic_scheduler_is_ksamplers_schedule_for_ordinary_samplers(scheduler, denoise) -> None:
    assert torch.equal(basic_sigmas(SCHEDULE, scheduler, 8, denoise), denoise_sigmas(SCHEDULE, scheduler, "euler", 8,
                                                                                     denoise))


def test_basic_scheduler_keeps_the_penultimate_sigma_ksampler_drops_for_dpm_2() -> None:
    basic = basic_sigmas(SCHEDULE, "normal", 8, 1.0)
    assert len(basic) == 9 and not torch.equal(basic, calculate_sigmas(SCHEDULE, "normal", "dpm_2", 8))
    assert len(basic_sigmas(SCHEDULE, "normal", 8, 0.0)) == 0


def test_split_at_step_shares_the_boundary_sigma() -> None:
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    high, low = split_at_step(sigmas, 2)
    assert high.tolist() == [10.0, 5.0, 2.0] and low.tolist() == [2.0, 1.0, 0.0]
    high, low = split_at_step(sigmas, 9)
    assert high.tolist() == sigmas.tolist() and low.tolist() == []


def test_split_at_denoise_like_comfyui_including_its_zero_quirk() -> None:
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    high, low = split_at_denoise(sigmas, 0.5)  # two steps each, meeting at 2.0
    assert high.tolist() == [10.0, 5.0, 2.0] and low.tolist() == [2.0, 1.0, 0.0]
    high, low = split_at_denoise(sigmas, 1.0)
    assert high.tolist() == [10.0] and low.tolist() == sigmas.tolist()
    high, low = split_at_denoise(sigmas, 0.0)  # a [:-0] slice: empty, as in ComfyUI
    assert high.tolist() == [] and low.tolist() == [0.0]


def test_flip_set_first_and_manual_never_change_their_input() -> None:
    sigmas = torch.tensor([3.0, 1.0, 0.0])
    assert flip(sigmas).tolist() == pytest.approx([0.0001, 1.0, 3.0])
    assert set_first(sigmas, 7.5).tolist() == [7.5, 1.0, 0.0]
    assert sigmas.tolist() == [3.0, 1.0, 0.0]
    assert flip(torch.zeros(0)).tolist() == []
    assert parse_manual("14.61, 7.0,3 ; .5\n0").tolist() == pytest.approx([14.61, 7.0, 3.0, 0.5, 0.0])
    assert parse_manual("-1, +2").tolist() == [-1.0, 2.0]
    assert parse_manual("none").tolist() == []


def test_percent_to_sigma() -> None:
    assert percent_sigma(SCHEDULE, 0.0) == PERCENT_ZERO_SIGMA
    assert percent_sigma(SCHEDULE, 1.0) == 0.0
    assert percent_sigma(SCHEDULE, 0.0, actual=True) == SCHEDULE.sigma_max
    assert percent_sigma(SCHEDULE, 1.0, actual=True) == SCHEDULE.sigma_min
    assert percent_sigma(SCHEDULE, 0.5) == pytest.approx(float(SCHEDULE.sigma(499.5)))


def test_sampler_choice_is_checked_and_hashable() -> None:
    with pytest.raises(ValueError, match="unknown or unsupported sampler"):
        SamplerChoice("no_such_sampler")
    a = SamplerChoice.of("euler_ancestral", s_noise=1.0, eta=0.5)
    assert a == SamplerChoice.of("euler_ancestral", eta=0.5, s_noise=1.0) and hash(a) == hash(a)
    assert a.kwargs == {"eta": 0.5, "s_noise": 1.0}


def test_noise_source() -> None:
    seeded = NoiseSource(7).generate((2, 4, 3, 3))
    assert torch.equal(seeded, torch.randn((2, 4, 3, 3), generator=torch.Generator().manual_seed(7)))
    assert torch.equal(NoiseSource(7, enabled=False).generate((1, 4, 2, 2)), torch.zeros(1, 4, 2, 2))


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact x0 estimate for data ~ N(0.5, 1)."""
    s = sigma.reshape(-1, 1, 1, 1)
    return (x + s * s * 0.5) / (1 + s * s)


def _run(sampler: SamplerChoice | str, sigmas: torch.Tensor, **kw) -> torch.Tensor:
    choice = sampler if isinstance(sampler, SamplerChoice) else SamplerChoice(sampler)
    noise = NoiseSource(3).generate((2, 4, 4, 4))
    return run_sampler(gaussian_denoiser, torch.zeros(2, 4, 4, 4), sigmas, choice.name, schedule=SCHEDULE, seed=3,
                       noise=noise, options=choice.kwargs, **kw)


def test_sampler_options_reach_the_function() -> None:
    sigmas = get_sigmas("karras", SCHEDULE, 6)
    euler = _run("euler", sigmas)
    torch.testing.assert_close(_run(SamplerChoice.of("euler_ancestral", eta=0.0), sigmas), euler, rtol=0, atol=1e-6)
    assert torch.equal(_run(SamplerChoice.of("euler_ancestral", eta=1.0, s_noise=1.0), sigmas),
                       _run("euler_ancestral", sigmas))
    assert not torch.allclose(_run(SamplerChoice.of("euler_ancestral", s_noise=0.5), sigmas),
                              _run("euler_ancestral", sigmas))
    assert not torch.equal(_run(SamplerChoice.of("lms", order=2), sigmas), _run("lms", sigmas))


def test_given_noise_with_one_sigma_only_noises_and_with_none_returns_the_latent() -> None:
    latent = torch.full((2, 4, 4, 4), 0.25)
    noise = NoiseSource(3).generate(latent.shape)
    one = run_sampler(gaussian_denoiser, latent, torch.tensor([2.0]), "euler", schedule=SCHEDULE, seed=3, noise=noise)
    torch.testing.assert_close(one, latent + 2.0 * noise)
    none = run_sampler(gaussian_denoiser, latent, torch.zeros(0), "euler", schedule=SCHEDULE, seed=3, noise=noise)
    assert none is latent


def test_ksampler_planning_still_ignores_a_single_sigma() -> None:
    latent = torch.full((1, 4, 2, 2), 0.25)
    assert run_sampler(gaussian_denoiser, latent, torch.tensor([2.0]), "euler", schedule=SCHEDULE, seed=3) is latent


class _Recording:
    """A stand-in UNet-side denoiser: x0 = x * scale of the cond's context value, counting calls."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return x * context[:, :1, :1].reshape(-1, 1, 1, 1)


def _region(value: float):
    return make_region({"context": torch.full((1, 1, 2), value)}, {}, 4, 4)


@pytest.mark.parametrize("nested", [False, True])
def test_dual_cfg_formula(nested: bool) -> None:
    x, sigma = torch.ones(1, 4, 4, 4), torch.ones(1)
    recorder = _Recording()
    dual = DualCFGDenoiser(recorder, [_region(3.0)], [_region(2.0)], [_region(1.0)], 1.5, 4.0, nested, concat_conds)
    d1, d2, dn = 3.0, 2.0, 1.0
    expected = dn + 4.0 * (d2 + 1.5 * (d1 - d2) - dn) if nested else dn + 4.0 * (d2 - dn) + 1.5 * (d1 - d2)
    torch.testing.assert_close(dual(x, sigma), torch.full_like(x, expected))
    assert recorder.batches == [3]  # the three estimates in one call


def test_dual_cfg_skips_what_cancels_at_scale_one() -> None:
    x, sigma = torch.ones(1, 4, 4, 4), torch.ones(1)
    recorder = _Recording()
    dual = DualCFGDenoiser(recorder, [_region(3.0)], [_region(2.0)], [_region(1.0)], 1.5, 1.0, False, concat_conds)
    torch.testing.assert_close(dual(x, sigma), torch.full_like(x, 2.0 + 1.5 * (3.0 - 2.0)))
    assert recorder.batches == [2]  # no negative
    recorder.batches.clear()
    dual = DualCFGDenoiser(recorder, [_region(3.0)], [_region(2.0)], [_region(1.0)], 1.0, 1.0, False, concat_conds)
    torch.testing.assert_close(dual(x, sigma), torch.full_like(x, 3.0))
    assert recorder.batches == [1]  # the first prompt alone


def test_every_sampler_runs_from_a_choice() -> None:
    sigmas = get_sigmas("karras", SCHEDULE, 4)
    for name in SAMPLER_NAMES:
        assert torch.isfinite(_run(name, sigmas)).all(), name


def test_memory_estimates_of_the_custom_samplers() -> None:
    from graph.estimate import TensorSize
    from nodes.custom_sampling import AddNoise, SamplerCustom, SamplerCustomAdvanced

    latent = TensorSize((2, 4, 8, 8))
    for node in (SamplerCustom, SamplerCustomAdvanced):
        estimate = node.estimate({"latent_image": latent})
        assert [size.shape for size in estimate.outputs] == [(2, 4, 8, 8), (2, 4, 8, 8)]  # output, denoised_output
        assert estimate.working_bytes > 0
        assert node.estimate({"latent_image": None}) is None
    assert [size.shape for size in AddNoise.estimate({"latent_image": latent}).outputs] == [(2, 4, 8, 8)]
