"""Sigma schedules, the discrete schedule, and KSampler/KSamplerAdvanced step planning."""

from __future__ import annotations

import pytest
import torch

from nodes.sampling import (
    SAMPLER_NAMES,
    SCHEDULER_NAMES,
    DiscreteSchedule,
    advanced_sigmas,
    calculate_sigmas,
    denoise_sigmas,
    get_sampler,
    get_sigmas,
    scaled_linear_betas,
    sd_schedule,
)

SCHEDULE = sd_schedule()


def test_sd_schedule_matches_known_sigma_range() -> None:
    assert SCHEDULE.num_timesteps == 1000
    assert SCHEDULE.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert SCHEDULE.sigma_max == pytest.approx(14.6146, abs=1e-3)


def test_betas_are_an_explicit_argument() -> None:
    other = DiscreteSchedule.from_betas(scaled_linear_betas(500, 0.0001, 0.02))
    assert other.num_timesteps == 500
    assert other.sigma_max != pytest.approx(SCHEDULE.sigma_max)
    assert float(get_sigmas("karras", other, 5)[0]) == pytest.approx(other.sigma_max)


def test_timestep_roundtrip() -> None:
    t = torch.tensor([0.0, 10.5, 500.25, 999.0])
    back = SCHEDULE.timestep(SCHEDULE.sigma(t), quantize=False)
    assert torch.allclose(back, t, atol=1e-2)
    q = SCHEDULE.timestep(SCHEDULE.sigma(t), quantize=True)
    assert torch.equal(q, q.round())
    assert torch.equal(q, torch.tensor([0.0, 10.0, 500.0, 999.0])) or torch.equal(q, torch.tensor([0.0, 11.0, 500.0, 999.0]))


@pytest.mark.parametrize("steps", [1, 2, 7, 20])
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_schedules_descend_to_zero(name: str, steps: int) -> None:
    sigmas = get_sigmas(name, SCHEDULE, steps)
    assert sigmas.dtype == torch.float32
    assert torch.isfinite(sigmas).all()
    assert float(sigmas[-1]) == 0.0
    assert (sigmas[:-1] > 0).all()
    assert (sigmas[1:] < sigmas[:-1]).all()
    assert float(sigmas[0]) <= SCHEDULE.sigma_max * (1 + 1e-5)
    if name != "ddim_uniform":
        assert len(sigmas) == steps + 1


def test_scheduler_endpoints_follow_comfyui() -> None:
    karras = get_sigmas("karras", SCHEDULE, 10)
    assert float(karras[0]) == pytest.approx(SCHEDULE.sigma_max, rel=1e-5)
    assert float(karras[-2]) == pytest.approx(SCHEDULE.sigma_min, rel=1e-5)
    normal = get_sigmas("normal", SCHEDULE, 10)
    assert float(normal[-2]) == pytest.approx(SCHEDULE.sigma_min, rel=1e-5)
    sgm = get_sigmas("sgm_uniform", SCHEDULE, 10)
    assert float(sgm[-2]) > SCHEDULE.sigma_min * 2  # the last timestep is dropped
    simple = get_sigmas("simple", SCHEDULE, 4)
    assert torch.equal(simple[:-1], SCHEDULE.sigmas[[999, 749, 499, 249]])
    # DDIM uniform: table entries 1, 51, ..., 951 for 20 steps; 30 steps give 31 (stride 33)
    ddim = get_sigmas("ddim_uniform", SCHEDULE, 20)
    assert torch.equal(ddim[:-1], SCHEDULE.sigmas[torch.arange(951, 0, -50)])
    assert len(get_sigmas("ddim_uniform", SCHEDULE, 30)) == 32
    lq = get_sigmas("linear_quadratic", SCHEDULE, 4)
    assert float(lq[0]) == pytest.approx(SCHEDULE.sigma_max)
    beta = get_sigmas("beta", SCHEDULE, 2)
    assert float(beta[1]) == pytest.approx(float(SCHEDULE.sigmas[500]))  # Beta(0.6, 0.6) median


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown scheduler"):
        get_sigmas("align_your_steps", SCHEDULE, 10)
    for name in ("restart", "dpmpp_2m_sde_cfg_pp", "euler_gpu", "nonsense"):
        assert name not in SAMPLER_NAMES
        with pytest.raises(ValueError, match="sampler"):
            get_sampler(name)
    with pytest.raises(ValueError):
        get_sigmas("karras", SCHEDULE, 0)


@pytest.mark.parametrize("sampler", ["dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"])
def test_discard_penultimate_sigma(sampler: str) -> None:
    full = get_sigmas("karras", SCHEDULE, 11)
    sigmas = calculate_sigmas(SCHEDULE, "karras", sampler, 10)
    assert len(sigmas) == 11
    assert torch.equal(sigmas, torch.cat([full[:-2], full[-1:]]))
    assert torch.equal(calculate_sigmas(SCHEDULE, "karras", "euler", 10), get_sigmas("karras", SCHEDULE, 10))


def test_denoise_sigmas() -> None:
    full = calculate_sigmas(SCHEDULE, "normal", "euler", 20)
    assert torch.equal(denoise_sigmas(SCHEDULE, "normal", "euler", 20, 1.0), full)
    half = denoise_sigmas(SCHEDULE, "normal", "euler", 10, 0.5)
    assert torch.equal(half, full[-11:])
    odd = denoise_sigmas(SCHEDULE, "karras", "euler", 10, 0.3)  # int(10 / 0.3) = 33 steps
    assert torch.equal(odd, get_sigmas("karras", SCHEDULE, 33)[-11:])
    assert len(denoise_sigmas(SCHEDULE, "normal", "euler", 20, 0.0)) == 0


def test_advanced_sigmas() -> None:
    full = get_sigmas("normal", SCHEDULE, 20)
    # whole range
    assert torch.equal(advanced_sigmas(full, 0, 10000, False), full)
    # first pass of a two-pass workflow: stop at 12 with leftover noise
    first = advanced_sigmas(full, 0, 12, True)
    assert torch.equal(first, full[:13])
    assert float(first[-1]) > 0
    # same, fully denoised: last sigma forced to 0
    forced = advanced_sigmas(full, 0, 12, False)
    assert torch.equal(forced[:-1], full[:12]) and float(forced[-1]) == 0.0
    # second pass
    assert torch.equal(advanced_sigmas(full, 12, 10000, False), full[12:])
    # nothing to do
    assert len(advanced_sigmas(full, 20, 10000, False)) < 2
    assert len(advanced_sigmas(full, 5, 5, True)) < 2
    # the input is not modified
    assert float(full[12]) > 0
