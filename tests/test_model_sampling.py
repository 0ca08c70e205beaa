"""ModelSamplingDiscrete: sampling a MODEL as eps / v_prediction / lcm / x0, and zero terminal
SNR, on the tiny generated checkpoints (SD1 is eps, SD2-v is v-prediction) and on the
schedule maths alone."""

import math
import shutil

import pytest
import torch

from graph import build_registry, prepare
from nodes.model_sampling import SAMPLING_CHOICES
from nodes.models.folders import ModelFolders
from nodes.sampling import DiscreteDenoiser, DistilledSchedule, get_sigmas, sd_schedule, zero_terminal_snr
from nodes.sampling.noise_schedule import ZSNR_TERMINAL_ALPHA_CUMPROD
from nodes.sd.prediction_override import SAMPLING_PREDICTIONS, with_model_sampling
from nodes.sd.runtime import DeviceSettings, Runtime
from tests.test_sd_nodes import Capture, txt2img

pytest_plugins = ["tests.fixtures.tiny_models"]


@pytest.fixture(scope="module")
def env(tiny_checkpoints, tmp_path_factory):
    from graph import Folders

    root = tmp_path_factory.mktemp("model_sampling_env")
    (root / "models" / "checkpoints").mkdir(parents=True)
    for name in ("sd1", "sd2_v"):
        shutil.copy(getattr(tiny_checkpoints, name), root / "models" / "checkpoints" / f"tiny_{name}.safetensors")
    runtime = Runtime(folders=Folders.under(root), models=ModelFolders(root / "models"), settings=DeviceSettings(device="cpu", dtype=torch.float32))
    return build_registry("nodes", None), runtime


def overridden(sampling, zsnr=False, ckpt="tiny_sd1.safetensors", **kwargs):
    """txt2img with a ModelSamplingDiscrete (node "8") between the loader and the KSampler."""
    document = txt2img(ckpt, **kwargs)
    document["8"] = {"class_type": "ModelSamplingDiscrete",
                     "inputs": {"model": ["1", 0], "sampling": sampling, "zsnr": zsnr}}
    document["5"]["inputs"]["model"] = ["8", 0]
    return document


def sampled(capture, document):
    result = capture.run(document)
    assert result.status == "success", result.error and result.error["traceback"][-3:]
    return capture.output("5")["samples"]


@pytest.fixture(scope="module")
def plain_sd1(env):
    return sampled(Capture(env), txt2img())


def test_choices_are_what_the_helper_implements():
    assert SAMPLING_CHOICES == tuple(SAMPLING_PREDICTIONS)


def test_v_prediction_on_an_eps_model_changes_the_latent(env, plain_sd1):
    latent = sampled(Capture(env), overridden("v_prediction"))
    assert torch.isfinite(latent).all() and not torch.allclose(latent, plain_sd1, atol=1e-3)


@pytest.mark.parametrize(("ckpt", "sampling"), [("tiny_sd1.safetensors", "eps"),
                                                ("tiny_sd2_v.safetensors", "v_prediction")])
def test_the_detected_prediction_gives_exactly_the_plain_latent(env, ckpt, sampling):
    plain = sampled(Capture(env), txt2img(ckpt))
    assert torch.equal(sampled(Capture(env), overridden(sampling, ckpt=ckpt)), plain)


def test_eps_on_the_v_model_changes_its_latent(env):
    plain = sampled(Capture(env), txt2img("tiny_sd2_v.safetensors"))
    latent = sampled(Capture(env), overridden("eps", ckpt="tiny_sd2_v.safetensors"))
    assert not torch.allclose(latent, plain, atol=1e-3)


def test_the_cached_base_model_is_not_modified(env, plain_sd1):
    capture = Capture(env)
    sampled(capture, overridden("v_prediction", zsnr=True))
    base = capture.output("1")
    assert base.prediction == "eps" and base.base_schedule is None
    assert base.schedule.sigma_max == pytest.approx(14.6146, abs=1e-3)
    # same executor: the loader is a cache hit, the KSampler runs again on the base model
    result = capture.run(txt2img())
    assert "1" not in result.executed and "5" in result.executed
    assert torch.equal(capture.output("5")["samples"], plain_sd1)


def test_x0_and_lcm_sample_differently_and_finitely(env, plain_sd1):
    x0 = sampled(Capture(env), overridden("x0"))
    lcm = sampled(Capture(env), overridden("lcm", sampler="lcm", scheduler="sgm_uniform"))
    for latent in (x0, lcm):
        assert torch.isfinite(latent).all() and not torch.allclose(latent, plain_sd1, atol=1e-3)


def test_zsnr_changes_the_latent(env, plain_sd1):
    latent = sampled(Capture(env), overridden("eps", zsnr=True))
    assert torch.isfinite(latent).all() and not torch.allclose(latent, plain_sd1, atol=1e-3)


def test_unknown_sampling_values_are_refused_at_validation(env):
    registry, runtime = env
    for value in ("img_to_img", "v", "EPS"):
        checked = prepare(overridden(value), registry, runtime=runtime)
        assert not checked.ok
        errors = checked.node_errors["8"]["errors"]
        assert errors[0]["type"] == "value_not_in_list" and errors[0]["extra_info"]["input_name"] == "sampling"
    assert prepare(overridden("lcm"), registry, runtime=runtime).ok


def test_the_handle_shares_the_unet_and_rebuilds_from_the_loaded_schedule(env):
    capture = Capture(env)
    sampled(capture, txt2img())
    base = capture.output("1")
    once = with_model_sampling(base, "eps", zsnr=True)
    assert once.unet is base.unet and once.original_unet is base.unet and once.size_bytes() == 0
    twice = with_model_sampling(once, "v_prediction", zsnr=True)  # chained: zsnr from the loaded schedule again
    assert twice.prediction == "v" and twice.original_schedule is base.schedule
    assert torch.equal(twice.schedule.sigmas, once.schedule.sigmas)
    back = with_model_sampling(twice, "eps", zsnr=False)
    assert back.schedule is base.schedule and back.prediction == "eps"
    assert isinstance(with_model_sampling(base, "lcm", zsnr=False).schedule, DistilledSchedule)
    with pytest.raises(ValueError, match="unknown sampling"):
        with_model_sampling(base, "img_to_img", zsnr=False)


def test_zero_terminal_snr_rescale():
    abar = sd_schedule().alphas_cumprod
    rescaled = zero_terminal_snr(abar)
    assert rescaled[-1] == 0.0 and rescaled[0].item() == pytest.approx(abar[0].item(), rel=1e-12)
    # sqrt(alpha-bar) moves linearly: shifted by its last value, scaled to keep the first
    root, new_root = abar.sqrt(), rescaled.sqrt()
    expected = (root[500] - root[-1]) * root[0] / (root[0] - root[-1])
    assert new_root[500].item() == pytest.approx(expected.item(), rel=1e-12)
    assert bool((rescaled[1:] <= rescaled[:-1]).all())  # still decreasing
    schedule = sd_schedule().with_zero_terminal_snr()
    clamp = math.sqrt((1 - ZSNR_TERMINAL_ALPHA_CUMPROD) / ZSNR_TERMINAL_ALPHA_CUMPROD)
    assert schedule.sigma_max == pytest.approx(clamp, rel=1e-6) and 4000 < clamp < 5000
    assert schedule.sigma_min == pytest.approx(sd_schedule().sigma_min, rel=1e-6)
    assert torch.isfinite(get_sigmas("karras", schedule, 10)).all()


def test_distilled_schedule_is_every_twentieth_training_step():
    base = sd_schedule()
    lcm = DistilledSchedule(base)
    assert lcm.num_timesteps == 50 and torch.equal(lcm.sigmas, base.sigmas[19::20])
    assert torch.equal(lcm.timestep(lcm.sigmas), torch.arange(19, 1000, 20).float())
    assert torch.allclose(lcm.sigma(lcm.timestep(lcm.sigmas)), lcm.sigmas, rtol=1e-5)
    assert lcm.sigma_max == base.sigma_max and lcm.sigma_min == float(base.sigmas[19])
    sigmas = get_sigmas("sgm_uniform", lcm, 4)
    assert sigmas[0] == pytest.approx(base.sigma_max) and sigmas[-1] == 0 and len(sigmas) == 5
    with pytest.raises(ValueError):
        DistilledSchedule(base, original_timesteps=1)


def test_x0_and_lcm_denoisers():
    schedule = sd_schedule()
    x = torch.randn(1, 4, 8, 8)
    out = torch.randn(1, 4, 8, 8)

    def unet(x_in, timestep):
        return out

    assert torch.equal(DiscreteDenoiser(unet, schedule, "x0")(x, schedule.sigmas[5:6]), out)
    lcm = DiscreteDenoiser(unet, schedule, "lcm")
    eps = DiscreteDenoiser(unet, schedule, "eps")
    # consistency boundary condition: at timestep 0 the output is the input itself ...
    assert torch.allclose(lcm(x, schedule.sigmas[:1]), x, atol=1e-6)
    # ... and at high noise it is the eps model's x0 estimate
    top = schedule.sigmas[-1:]
    assert torch.allclose(lcm(x, top), eps(x, top), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(lcm(x, schedule.sigmas[1:2]), eps(x, schedule.sigmas[1:2]), atol=1e-3)
    with pytest.raises(ValueError, match="prediction"):
        DiscreteDenoiser(unet, schedule, "v_prediction")
