"""Sampler maths against an exact denoiser: no model, no download, exact answers.

For data x0 ~ N(mu, s^2) per element, the exact denoiser is
    D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2),
so every sampler x scheduler pair must turn sigma_max-scaled noise into samples with mean
mu and std s.  Step counts are chosen per pair: first-order samplers converge slowly, and
some pairs are known to need many steps (see ``steps_for``).  LCM assumes a consistency
model (D returns a sample), not a posterior mean, so its output std is checked against the
value this exact posterior-mean denoiser must give (``lcm_expected_std``).
"""

from __future__ import annotations

import math

import pytest
import torch

from nodes.sampling import SAMPLER_NAMES, SCHEDULER_NAMES, calculate_sigmas, get_sampler, sd_schedule
from nodes.sampling.noise import make_noise_sampler

SCHEDULE = sd_schedule()
SHAPE = (2, 4, 32, 32)  # 8192 elements: std error of the mean ~0.011 * s


def exact_denoiser(mu: float, s: float):
    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sg = sigma.reshape(-1, 1, 1, 1)
        return (s * s * x + sg * sg * mu) / (s * s + sg * sg)

    return denoise


def data_params(scheduler: str) -> tuple[float, float]:
    """(mu, s).  linear_quadratic spaces SD's sigmas linearly (it was made for flow models)
    and spends half its steps near sigma_max, so it is checked on wider data, where its
    coarse low-sigma steps are not what the test measures."""
    return (1.0, 3.0) if scheduler == "linear_quadratic" else (0.5, 1.0)


def steps_for(sampler: str, scheduler: str) -> int:
    first_order = {"euler": 50, "ddim": 50, "euler_ancestral": 80, "ddpm": 80, "euler_cfg_pp": 50,
                   "euler_ancestral_cfg_pp": 80, "heunpp2": 50, "gradient_estimation": 50,
                   "gradient_estimation_cfg_pp": 50}
    if scheduler == "linear_quadratic":
        # linear in sigma: first-order samplers need many steps, ancestral ones most; the
        # multistep SDE solvers' std is still ~4.5% high at 150 steps, whatever the noise
        many = {"euler_ancestral": 600, "ddpm": 600, "dpmpp_2m_sde": 300, "dpmpp_3m_sde": 300,
                "euler_ancestral_cfg_pp": 600, "dpmpp_2m_sde_gpu": 300, "dpmpp_3m_sde_gpu": 300,
                # the Heun form and ancestral RES are ~5-10% off at 300 steps
                "dpmpp_2m_sde_heun": 600, "dpmpp_2m_sde_heun_gpu": 600, "res_multistep_ancestral": 600,
                "res_multistep_ancestral_cfg_pp": 600}
        return many.get(sampler, 300 if sampler in first_order else 150)
    # multistep SDE solvers extrapolate across the sharply uneven last steps of these
    # schedules (sigma ~0.3 -> 0.029 -> 0); like ComfyUI's, they need many steps there
    slow = {
        ("dpmpp_2m_sde", "normal"): 120,
        ("dpmpp_2m_sde", "ddim_uniform"): 100,
        ("dpmpp_3m_sde", "normal"): 200,
        ("dpmpp_3m_sde", "ddim_uniform"): 150,
    }
    # the _gpu twins share their base's maths; the Heun form and ancestral RES extrapolate
    # like 3M SDE (and ancestral RES also needs more steps on karras and kl_optimal)
    for twin, base in (("dpmpp_2m_sde_gpu", "dpmpp_2m_sde"), ("dpmpp_3m_sde_gpu", "dpmpp_3m_sde"),
                       ("dpmpp_2m_sde_heun", "dpmpp_3m_sde"), ("dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde"),
                       ("res_multistep_ancestral", "dpmpp_3m_sde"),
                       ("res_multistep_ancestral_cfg_pp", "dpmpp_3m_sde")):
        if sampler == twin and (base, scheduler) in slow:
            return slow[(base, scheduler)]
    if sampler.startswith("res_multistep_ancestral") and scheduler in ("karras", "kl_optimal"):
        return 80
    # ipndm_v's variable-step weights extrapolate across beta's quickly growing first steps
    if (sampler, scheduler) == ("ipndm_v", "beta"):
        return 100
    if (sampler, scheduler) in slow:
        return slow[(sampler, scheduler)]
    return first_order.get(sampler, 30)


# dpm_fast and dpm_adaptive stop at the schedule's last non-zero sigma, as in ComfyUI
STOP_BEFORE_ZERO = {"dpm_fast", "dpm_adaptive"}


def end_sigma(sampler: str, sigmas: torch.Tensor) -> float:
    """The noise level a sampler's output is left at: 0, or the last non-zero sigma."""
    return float(sigmas[-2]) if sampler in STOP_BEFORE_ZERO and float(sigmas[-1]) == 0 else float(sigmas[-1])


def lcm_expected_std(sigmas: list[float], s: float) -> float:
    """Std of LCM's output with the posterior-mean denoiser: each step maps the deviation
    from mu by k = s^2/(s^2+sigma^2) and adds fresh noise of std sigma_next."""
    var = sigmas[0] ** 2
    for a, b in zip(sigmas[:-1], sigmas[1:], strict=True):
        k = s * s / (s * s + a * a)
        var = k * k * var + b * b
    return math.sqrt(var)


# ComfyUI 0.3.64's dpmpp_2s_ancestral_cfg_pp, which we reproduce exactly (the ComfyUI
# oracle test), shifts each full step by D_g(x, sigma) - D_u(x_mid, sigma_mid): even without
# guidance that is not 0, and the samples' std comes out 15-20% low at any step count
# (0.80 at 480 steps).  Later ComfyUI versions changed the sampler; this marks the defect
# so that changing the sampler is a deliberate choice against the oracle.
KNOWN_COMFY_DEFECTS = {
    "dpmpp_2s_ancestral_cfg_pp": "ComfyUI 0.3.64's form samples too narrow a distribution (std ~0.8 s)",
}
RECOVERY_SAMPLERS = [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_COMFY_DEFECTS[name]))
    if name in KNOWN_COMFY_DEFECTS else name
    for name in SAMPLER_NAMES
]


# Every sampler runs with normal and karras in the fast lane; the other schedulers' 300-odd
# cases are marked slow (make test runs them all).
FAST_SCHEDULERS = ("normal", "karras")
SCHEDULER_CASES = [name if name in FAST_SCHEDULERS else pytest.param(name, marks=pytest.mark.slow)
                   for name in SCHEDULER_NAMES]


@pytest.mark.parametrize("scheduler", SCHEDULER_CASES)
@pytest.mark.parametrize("sampler", RECOVERY_SAMPLERS)
def test_gaussian_data_is_recovered(sampler: str, scheduler: str) -> None:
    mu, s = data_params(scheduler)
    spec = get_sampler(sampler)
    sigmas = calculate_sigmas(SCHEDULE, scheduler, sampler, steps_for(sampler, scheduler))
    noise = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(0))
    x = mu + noise * float(sigmas[0])
    out = spec.fn(exact_denoiser(mu, s), x, sigmas, noise_sampler=make_noise_sampler(spec.noise, x, 1, sigmas),
                  **spec.options(SCHEDULE))
    target_std = lcm_expected_std([float(v) for v in sigmas], s) if sampler == "lcm" else s
    if sampler in STOP_BEFORE_ZERO:  # samples of the data still noised to the end sigma
        target_std = math.sqrt(s * s + end_sigma(sampler, sigmas) ** 2)
    assert torch.isfinite(out).all()
    assert abs(out.mean().item() - mu) < 0.05 * s, out.mean().item()
    assert abs(out.std().item() / target_std - 1) < 0.05, (out.std().item(), target_std)


DETERMINISTIC = [name for name in SAMPLER_NAMES if get_sampler(name).noise is None and name != "dpm_adaptive"]

# the stochastic samplers with an ODE limit: these options turn their noise off (ER-SDE's
# noise scale function f(sigma) = sigma makes its drift the probability-flow ODE's)
ODE_LIMITS = {
    "er_sde": {"s_noise": 0.0, "noise_scaler": lambda sigma: sigma},
    "dpmpp_2m_sde_heun": {"eta": 0.0},
    "res_multistep_ancestral": {"eta": 0.0},
    "seeds_2": {"eta": 0.0},
    "seeds_3": {"eta": 0.0},
    "sa_solver": {"eta": 0.0},
    "sa_solver_pece": {"eta": 0.0},
}

# euler_cfg_pp is Euler without guidance; heunpp2's extra slopes are weighted by
# sigma / sigma_max, so as the steps shrink it tends to Euler; gradient estimation's
# extrapolated slope still leaves a first-order error
FIRST_ORDER_ODE = {"euler", "ddim", "euler_cfg_pp", "heunpp2", "gradient_estimation", "gradient_estimation_cfg_pp"}

# step counts whose doubling shows the order; 10 -> 20 by default.  At 10 karras steps
# ipndm_v's error happens to nearly cancel, and gradient estimation is not yet in its
# asymptotic range (ratio ~0.67, then 0.56 from 20 -> 40).  Third-order SEEDS-3 is already
# at ~1e-3 by 20 steps, the floor every sampler shares here: its last step returns
# D(x, sigma_min), not the ODE's solution at 0, so it is measured from 5 -> 10 steps
STEP_PAIRS = {"ipndm_v": (20, 40), "gradient_estimation": (20, 40), "gradient_estimation_cfg_pp": (20, 40),
              "seeds_3": (5, 10)}


@pytest.mark.parametrize("sampler", DETERMINISTIC + sorted(ODE_LIMITS))
def test_ode_samplers_converge_to_exact_solution(sampler: str) -> None:
    """The probability-flow ODE of Gaussian data has the closed form
    x(sigma) = mu + (x(sigma_T) - mu) * sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_T^2).  Doubling
    the steps (10 -> 20, karras) must halve the per-element error of a first-order method and
    cut that of the higher-order ones by well over half, which pins down each method's order.
    Stochastic samplers are checked in their noise-free limit (``ODE_LIMITS``)."""
    mu, s = 0.5, 1.0
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator("cpu").manual_seed(3), dtype=torch.float64)
    spec = get_sampler(sampler)
    errors = []
    for steps in STEP_PAIRS.get(sampler, (10, 20)):
        sigmas = calculate_sigmas(SCHEDULE, "karras", sampler, steps)
        start, end = float(sigmas[0]), end_sigma(sampler, sigmas)
        out = spec.fn(exact_denoiser(mu, s), mu + noise * start, sigmas, **spec.options(SCHEDULE),
                      **ODE_LIMITS.get(sampler, {}))
        exact = mu + noise * start * math.sqrt(s * s + end * end) / math.sqrt(s * s + start * start)
        errors.append((out - exact).abs().max().item())
    ratio = errors[1] / errors[0]
    if sampler in FIRST_ORDER_ODE:
        assert 0.4 < ratio < 0.6, errors
    else:
        assert ratio < 0.3, errors
        # RES's exact phi_2 weights (which the Heun form of DPM-Solver++(2M) SDE also has at
        # eta 0: the same method) leave a larger error constant than DPM-Solver++(2M)'s
        # (0.056 against 0.037 at 20 steps), at the same order
        same_as_res = sampler.startswith("res_multistep") or sampler == "dpmpp_2m_sde_heun"
        assert errors[1] < (0.06 if same_as_res else 0.05), errors


def test_dpm_adaptive_picks_its_own_steps_within_its_tolerance() -> None:
    """dpm_adaptive only takes the schedule's end points (so 10 and 20 karras steps give the
    same result) and its step-size controller keeps the RMS error, relative to the solution,
    within its rtol of 5%; tolerances 10x tighter must give a much smaller error."""
    mu, s = 0.5, 1.0
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator("cpu").manual_seed(3), dtype=torch.float64)
    fn = get_sampler("dpm_adaptive").fn
    outs, errors = [], []
    for steps, rtol, atol in ((10, 0.05, 0.0078), (20, 0.05, 0.0078), (20, 0.005, 0.00078)):
        sigmas = calculate_sigmas(SCHEDULE, "karras", "dpm_adaptive", steps)
        start, end = float(sigmas[0]), end_sigma("dpm_adaptive", sigmas)
        out = fn(exact_denoiser(mu, s), mu + noise * start, sigmas, rtol=rtol, atol=atol)
        exact = mu + noise * start * math.sqrt(s * s + end * end) / math.sqrt(s * s + start * start)
        outs.append(out)
        errors.append(((out - exact).pow(2).mean().sqrt() / exact.pow(2).mean().sqrt()).item())
    assert torch.equal(outs[0], outs[1])
    assert errors[0] < 0.05, errors
    assert errors[2] < errors[0] / 3, errors
