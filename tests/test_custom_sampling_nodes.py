"""Custom-sampling nodes against ComfyUI's declarations and saved workflows, and on the house model.

``COMFY`` below writes out, as facts read from ComfyUI's ``comfy_extras/nodes_custom_sampler.py``,
each node's inputs in order (name, type, default, min, max) and outputs (type, name). The
documents these tests convert are built from those facts, or are nodes and a workflow
ComfyUI itself saved (``tests/fixtures/comfy_templates``), never from our declarations.
The sampling tests run on the committed house model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from graph import Folders, build_registry, prepare, ui_to_api
from nodes.models.folders import ModelFolders
from nodes.sd.runtime import DeviceSettings, Runtime
from tests.test_sd_nodes import Capture

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).resolve().parent / "fixtures" / "comfy_templates"
HOUSE = "latentgraph-house-v1.safetensors"
SEED_MAX = 0xFFFFFFFFFFFFFFFF
SIGMA = (0.0, 5000.0)  # range of the explicit schedulers' sigma inputs
STEPS = ("steps", "INT", 20, 1, 10000)
ETA = ("eta", "FLOAT", 1.0, 0.0, 100.0)
S_NOISE = ("s_noise", "FLOAT", 1.0, 0.0, 100.0)
NOISE_DEVICE = ("noise_device", ["gpu", "cpu"], None, None, None)

# node: (inputs as (name, type or combo options, default, min, max), outputs as (type, name)).
# A combo given as None has options that depend on the installation (sampler/scheduler names).
COMFY: dict[str, tuple[list[tuple[Any, ...]], list[tuple[str, str]]]] = {
    "SamplerCustom": ([("model", "MODEL", None, None, None), ("add_noise", "BOOLEAN", True, None, None),
                       ("noise_seed", "INT", 0, 0, SEED_MAX), ("cfg", "FLOAT", 8.0, 0.0, 100.0),
                       ("positive", "CONDITIONING", None, None, None), ("negative", "CONDITIONING", None, None, None),
                       ("sampler", "SAMPLER", None, None, None), ("sigmas", "SIGMAS", None, None, None),
                       ("latent_image", "LATENT", None, None, None)],
                      [("LATENT", "output"), ("LATENT", "denoised_output")]),
    "SamplerCustomAdvanced": ([("noise", "NOISE", None, None, None), ("guider", "GUIDER", None, None, None),
                               ("sampler", "SAMPLER", None, None, None), ("sigmas", "SIGMAS", None, None, None),
                               ("latent_image", "LATENT", None, None, None)],
                              [("LATENT", "output"), ("LATENT", "denoised_output")]),
    "KSamplerSelect": ([("sampler_name", None, None, None, None)], [("SAMPLER", "SAMPLER")]),
    "BasicScheduler": ([("model", "MODEL", None, None, None), ("scheduler", None, None, None, None), STEPS,
                        ("denoise", "FLOAT", 1.0, 0.0, 1.0)], [("SIGMAS", "SIGMAS")]),
    "KarrasScheduler": ([STEPS, ("sigma_max", "FLOAT", 14.614642, *SIGMA), ("sigma_min", "FLOAT", 0.0291675, *SIGMA),
                         ("rho", "FLOAT", 7.0, 0.0, 100.0)], [("SIGMAS", "SIGMAS")]),
    "ExponentialScheduler": ([STEPS, ("sigma_max", "FLOAT", 14.614642, *SIGMA),
                              ("sigma_min", "FLOAT", 0.0291675, *SIGMA)], [("SIGMAS", "SIGMAS")]),
    "PolyexponentialScheduler": ([STEPS, ("sigma_max", "FLOAT", 14.614642, *SIGMA),
                                  ("sigma_min", "FLOAT", 0.0291675, *SIGMA), ("rho", "FLOAT", 1.0, 0.0, 100.0)],
                                 [("SIGMAS", "SIGMAS")]),
    "LaplaceScheduler": ([STEPS, ("sigma_max", "FLOAT", 14.614642, *SIGMA), ("sigma_min", "FLOAT", 0.0291675, *SIGMA),
                          ("mu", "FLOAT", 0.0, -10.0, 10.0), ("beta", "FLOAT", 0.5, 0.0, 10.0)], [("SIGMAS", "SIGMAS")]),
    "SDTurboScheduler": ([("model", "MODEL", None, None, None), ("steps", "INT", 1, 1, 10),
                          ("denoise", "FLOAT", 1.0, 0.0, 1.0)], [("SIGMAS", "SIGMAS")]),
    "BetaSamplingScheduler": ([("model", "MODEL", None, None, None), STEPS, ("alpha", "FLOAT", 0.6, 0.0, 50.0),
                               ("beta", "FLOAT", 0.6, 0.0, 50.0)], [("SIGMAS", "SIGMAS")]),
    "VPScheduler": ([STEPS, ("beta_d", "FLOAT", 19.9, 0.0, 5000.0), ("beta_min", "FLOAT", 0.1, 0.0, 5000.0),
                     ("eps_s", "FLOAT", 0.001, 0.0, 1.0)], [("SIGMAS", "SIGMAS")]),
    "ManualSigmas": ([("sigmas", "STRING", "1, 0.5", None, None)], [("SIGMAS", "SIGMAS")]),
    "SplitSigmas": ([("sigmas", "SIGMAS", None, None, None), ("step", "INT", 0, 0, 10000)],
                    [("SIGMAS", "high_sigmas"), ("SIGMAS", "low_sigmas")]),
    "SplitSigmasDenoise": ([("sigmas", "SIGMAS", None, None, None), ("denoise", "FLOAT", 1.0, 0.0, 1.0)],
                           [("SIGMAS", "high_sigmas"), ("SIGMAS", "low_sigmas")]),
    "FlipSigmas": ([("sigmas", "SIGMAS", None, None, None)], [("SIGMAS", "SIGMAS")]),
    "SetFirstSigma": ([("sigmas", "SIGMAS", None, None, None), ("sigma", "FLOAT", 136.0, 0.0, 20000.0)],
                      [("SIGMAS", "SIGMAS")]),
    "SamplingPercentToSigma": ([("model", "MODEL", None, None, None), ("sampling_percent", "FLOAT", 0.0, 0.0, 1.0),
                                ("return_actual_sigma", "BOOLEAN", False, None, None)], [("FLOAT", "sigma_value")]),
    "RandomNoise": ([("noise_seed", "INT", 0, 0, SEED_MAX)], [("NOISE", "NOISE")]),
    "DisableNoise": ([], [("NOISE", "NOISE")]),
    "AddNoise": ([("model", "MODEL", None, None, None), ("noise", "NOISE", None, None, None),
                  ("sigmas", "SIGMAS", None, None, None), ("latent_image", "LATENT", None, None, None)],
                 [("LATENT", "LATENT")]),
    "BasicGuider": ([("model", "MODEL", None, None, None), ("conditioning", "CONDITIONING", None, None, None)],
                    [("GUIDER", "GUIDER")]),
    "CFGGuider": ([("model", "MODEL", None, None, None), ("positive", "CONDITIONING", None, None, None),
                   ("negative", "CONDITIONING", None, None, None), ("cfg", "FLOAT", 8.0, 0.0, 100.0)],
                  [("GUIDER", "GUIDER")]),
    "DualCFGGuider": ([("model", "MODEL", None, None, None), ("cond1", "CONDITIONING", None, None, None),
                       ("cond2", "CONDITIONING", None, None, None), ("negative", "CONDITIONING", None, None, None),
                       ("cfg_conds", "FLOAT", 8.0, 0.0, 100.0), ("cfg_cond2_negative", "FLOAT", 8.0, 0.0, 100.0),
                       ("style", ["regular", "nested"], None, None, None)], [("GUIDER", "GUIDER")]),
    "SamplerEulerAncestral": ([ETA, S_NOISE], [("SAMPLER", "SAMPLER")]),
    "SamplerDPMPP_2S_Ancestral": ([ETA, S_NOISE], [("SAMPLER", "SAMPLER")]),
    "SamplerDPMPP_SDE": ([ETA, S_NOISE, ("r", "FLOAT", 0.5, 0.0, 100.0), NOISE_DEVICE], [("SAMPLER", "SAMPLER")]),
    "SamplerDPMPP_2M_SDE": ([("solver_type", ["midpoint", "heun"], None, None, None), ETA, S_NOISE, NOISE_DEVICE],
                            [("SAMPLER", "SAMPLER")]),
    "SamplerDPMPP_3M_SDE": ([ETA, S_NOISE, NOISE_DEVICE], [("SAMPLER", "SAMPLER")]),
    "SamplerLMS": ([("order", "INT", 4, 1, 100)], [("SAMPLER", "SAMPLER")]),
    "SamplerEulerAncestralCFGPP": ([("eta", "FLOAT", 1.0, 0.0, 1.0), ("s_noise", "FLOAT", 1.0, 0.0, 10.0)],
                                   [("SAMPLER", "SAMPLER")]),
    "SamplerDPMAdaptative": ([("order", "INT", 3, 2, 3), ("rtol", "FLOAT", 0.05, 0.0, 100.0),
                              ("atol", "FLOAT", 0.0078, 0.0, 100.0), ("h_init", "FLOAT", 0.05, 0.0, 100.0),
                              ("pcoeff", "FLOAT", 0.0, 0.0, 100.0), ("icoeff", "FLOAT", 1.0, 0.0, 100.0),
                              ("dcoeff", "FLOAT", 0.0, 0.0, 100.0), ("accept_safety", "FLOAT", 0.81, 0.0, 100.0),
                              ("eta", "FLOAT", 0.0, 0.0, 100.0), S_NOISE], [("SAMPLER", "SAMPLER")]),
    "SamplerER_SDE": ([("solver_type", ["ER-SDE", "Reverse-time SDE", "ODE"], None, None, None),
                       ("max_stage", "INT", 3, 1, 3), ETA, S_NOISE], [("SAMPLER", "SAMPLER")]),
    "SamplerSASolver": ([("model", "MODEL", None, None, None), ("eta", "FLOAT", 1.0, 0.0, 10.0),
                         ("sde_start_percent", "FLOAT", 0.2, 0.0, 1.0), ("sde_end_percent", "FLOAT", 0.8, 0.0, 1.0),
                         S_NOISE, ("predictor_order", "INT", 3, 1, 6), ("corrector_order", "INT", 4, 0, 6),
                         ("use_pece", "BOOLEAN", None, None, None), ("simple_order_2", "BOOLEAN", None, None, None)],
                        [("SAMPLER", "SAMPLER")]),
    "SamplerSEEDS2": ([("solver_type", ["phi_1", "phi_2"], None, None, None), ETA, S_NOISE,
                       ("r", "FLOAT", 0.5, 0.01, 1.0)], [("SAMPLER", "SAMPLER")]),
}
SEEDS = {"noise_seed"}  # INT widgets with control_after_generate: one extra saved value follows
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def _is_widget(kind: Any) -> bool:
    return kind is None or isinstance(kind, list) or kind in WIDGET_TYPES


def _widget_names(node: str) -> list[str]:
    return [name for name, kind, *_ in COMFY[node][0] if _is_widget(kind)]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom_sampling")
    (root / "models" / "checkpoints").mkdir(parents=True)
    shutil.copy(ROOT / "models" / "checkpoints" / HOUSE, root / "models" / "checkpoints" / HOUSE)
    runtime = Runtime(folders=Folders.under(root), models=ModelFolders(root / "models"), settings=DeviceSettings(device="cpu", dtype=torch.float32))
    return build_registry("nodes", None), runtime


@pytest.fixture(scope="module")
def capture(env):
    return Capture(env)


# --- declarations ----------------------------------------------------------------------------


@pytest.mark.parametrize("node", sorted(COMFY))
def test_object_info_has_comfyuis_inputs_and_outputs(env, node):
    registry, runtime = env
    info = registry.object_info(runtime)[node]
    inputs, outputs = COMFY[node]
    assert info["input_order"]["required"] == [name for name, *_ in inputs]
    for name, kind, default, low, high in inputs:
        spec_type, options = info["input"]["required"][name]
        if kind is None:
            assert isinstance(spec_type, list) and spec_type, name
        elif isinstance(kind, list):
            assert spec_type == kind, name
        else:
            assert spec_type == kind, name
        if default is not None:
            assert options.get("default") == default, name
        if low is not None:
            assert (options.get("min"), options.get("max")) == (low, high), name
        assert options.get("control_after_generate", False) == (name in SEEDS), name
    assert [tuple(pair) for pair in zip(info["output"], info["output_name"], strict=True)] == outputs


def test_sampler_and_scheduler_choices_are_ksamplers(env):
    registry, runtime = env
    info = registry.object_info(runtime)
    assert info["KSamplerSelect"]["input"]["required"]["sampler_name"][0] == \
        info["KSampler"]["input"]["required"]["sampler_name"][0]
    assert info["BasicScheduler"]["input"]["required"]["scheduler"][0] == \
        info["KSampler"]["input"]["required"]["scheduler"][0]


def _ui_node(node_id: int, node: str, values: dict[str, Any]) -> dict[str, Any]:
    """One node as ComfyUI's editor saves it, laid out from the COMFY facts."""
    widgets: list[Any] = []
    for name in _widget_names(node):
        widgets.append(values[name])
        if name in SEEDS:
            widgets.append("randomize")
    inputs = [{"name": name, "type": kind, "link": None} for name, kind, *_ in COMFY[node][0] if not _is_widget(kind)]
    return {"id": node_id, "type": node, "pos": [0, 0], "size": [300, 100], "flags": {}, "order": node_id,
            "mode": 0, "inputs": inputs, "outputs": [{"name": n, "type": t, "links": []} for t, n in COMFY[node][1]],
            "properties": {"Node name for S&R": node}, "widgets_values": widgets}


def _sample_values(node: str) -> dict[str, Any]:
    """A value for each widget of ``node`` other than its default (where one exists)."""
    values: dict[str, Any] = {}
    for name, kind, default, _low, high in COMFY[node][0]:
        if kind == "INT":
            values[name] = min(default + 3, high)
        elif kind == "FLOAT":
            values[name] = round(min(default + 0.25, high) if high is not None else default + 0.25, 4)
        elif kind == "BOOLEAN":
            values[name] = not default  # ComfyUI leaves some without a default: saved as True here
        elif kind == "STRING":
            values[name] = "3.5, 1.25, 0"
        elif isinstance(kind, list):
            values[name] = kind[-1]
        elif kind is None:
            values[name] = "euler" if name == "sampler_name" else "karras"
    return values


@pytest.mark.parametrize("node", sorted(COMFY))
def test_a_node_saved_by_comfyui_converts_widget_for_widget(env, node):
    registry, runtime = env
    values = _sample_values(node)
    document = {"nodes": [_ui_node(1, node, values)], "links": [], "version": 0.4}
    api = ui_to_api(document, registry)
    assert api["1"]["inputs"] == values
    checked = prepare(document, registry, runtime=runtime)
    linked = {name for name, kind, *_ in COMFY[node][0] if not _is_widget(kind)}
    errors = checked.node_errors.get("1", {}).get("errors", []) if not checked.ok else []
    # unconnected links are the only complaint: every widget value was accepted
    assert {e["extra_info"].get("input_name") for e in errors} <= linked, errors


def _saved_nodes() -> list[dict[str, Any]]:
    return json.loads((TEMPLATES / "custom_sampling_nodes.json").read_text())["nodes"]


@pytest.mark.parametrize("entry", [e for e in _saved_nodes() if e["node"]["type"] in COMFY],
                         ids=lambda e: f"{e['node']['type']}-{e['template']}")
def test_nodes_from_comfyuis_templates_convert(env, entry):
    registry, runtime = env
    saved = dict(entry["node"], id=1, mode=0)
    node = saved["type"]
    api = ui_to_api({"nodes": [saved], "links": []}, registry)
    values = list(saved.get("widgets_values") or [])
    expected: dict[str, Any] = {}
    for name in _widget_names(node):
        expected[name] = values.pop(0)
        if name in SEEDS:
            values.pop(0)  # "fixed" / "randomize"
    assert values == []
    assert api["1"]["inputs"] == expected
    checked = prepare({"nodes": [saved], "links": []}, registry, runtime=runtime)
    errors = checked.node_errors.get("1", {}).get("errors", []) if not checked.ok else []
    widget_errors = [e for e in errors if e["extra_info"].get("input_name") in expected]
    assert widget_errors == []


def test_comfyuis_sdxl_turbo_template_converts_validates_and_runs(env, capture):
    """ComfyUI's own SDXL-Turbo template (SamplerCustom + SDTurboScheduler + KSamplerSelect),
    unchanged but for the checkpoint, runs on the house model."""
    registry, runtime = env
    document = json.loads((TEMPLATES / "sdxlturbo_example.json").read_text())
    api = ui_to_api(document, registry)
    assert api["13"]["class_type"] == "SamplerCustom"
    assert api["13"]["inputs"]["add_noise"] is True and api["13"]["inputs"]["cfg"] == 1
    assert api["22"]["inputs"] == {"model": ["20", 0], "steps": 1, "denoise": 1}
    checked = prepare(document, registry, runtime=runtime)
    assert set(checked.node_errors) == {"20"}  # only the SDXL-Turbo checkpoint is missing here
    loader = next(n for n in document["nodes"] if n["type"] == "CheckpointLoaderSimple")
    loader["widgets_values"] = [HOUSE]
    result = capture.run(document)
    assert result.status == "success", result.error
    (image,) = result.outputs["27"]["images"]
    assert image["filename"].startswith("ComfyUI")


# --- sampling on the house model -------------------------------------------------------------


def _base(**overrides: Any) -> dict[str, dict[str, Any]]:
    """Loader, prompts, latent and a KSampler ("3") as workflows/txt2img_api.json has them."""
    settings = {"seed": 42, "steps": 4, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
                "denoise": 1.0, "batch": 1, "size": 64} | overrides
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": HOUSE}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": settings["size"], "height": settings["size"],
                                                         "batch_size": settings["batch"]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a large green star on a white background, center",
                                                        "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": settings["seed"], "steps": settings["steps"], "cfg": settings["cfg"],
            "sampler_name": settings["sampler_name"], "scheduler": settings["scheduler"],
            "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0], "denoise": settings["denoise"]}},
    }


def _custom_pieces(document: dict, seed: int, cfg: float, sampler: str, scheduler: str, steps: int,
                   denoise: float) -> None:
    document["10"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}}
    document["11"] = {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0],
                                                            "negative": ["7", 0], "cfg": cfg}}
    document["12"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}}
    document["13"] = {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": scheduler,
                                                                 "steps": steps, "denoise": denoise}}
    document["20"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["10", 0], "guider": ["11", 0], "sampler": ["12", 0], "sigmas": ["13", 0], "latent_image": ["5", 0]}}
    document["21"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["4", 0], "add_noise": True, "noise_seed": seed, "cfg": cfg, "positive": ["6", 0],
        "negative": ["7", 0], "sampler": ["12", 0], "sigmas": ["13", 0], "latent_image": ["5", 0]}}
    for node_id in ("3", "20", "21"):  # an output node for each sampler, so all of them run
        document[f"9{node_id}"] = {"class_type": "PreviewImage", "inputs": {"images": [f"8{node_id}", 0]}}
        document[f"8{node_id}"] = {"class_type": "VAEDecode", "inputs": {"samples": [node_id, 0], "vae": ["4", 2]}}


@pytest.mark.parametrize("sampler, scheduler, denoise, batch", [
    ("euler", "normal", 1.0, 1),
    ("euler_ancestral", "karras", 1.0, 2),  # per-step Gaussian noise from the seed
    ("dpmpp_2m_sde", "exponential", 1.0, 1),  # Brownian noise over the sigmas
    ("dpmpp_2m", "simple", 0.6, 1),  # denoise < 1: a shortened schedule, not starting at sigma_max
])
def test_custom_sampling_gives_exactly_ksamplers_latent(capture, sampler, scheduler, denoise, batch):
    document = _base(sampler_name=sampler, scheduler=scheduler, denoise=denoise, batch=batch)
    _custom_pieces(document, 42, 5.0, sampler, scheduler, 4, denoise)
    result = capture.run(document)
    assert result.status == "success", result.error
    reference = capture.output("3")["samples"]
    assert torch.equal(capture.output("20")["samples"], reference)
    assert torch.equal(capture.output("21")["samples"], reference)
    assert torch.equal(capture.output("820"), capture.output("83"))  # and so the decoded images


def test_denoised_output_is_the_last_steps_estimate(capture):
    document = _base()
    _custom_pieces(document, 42, 5.0, "euler", "normal", 4, 1.0)
    capture.run(document)
    output, denoised = capture.output("20", 0)["samples"], capture.output("20", 1)["samples"]
    # euler's last step goes to sigma 0, where x equals the estimate: they agree to rounding
    torch.testing.assert_close(denoised, output, rtol=0, atol=1e-5)
    # stop after step 1 and after step 2: an Euler step x2 = x1 + (x1 - D) (s2 - s1) / s1 gives
    # the estimate D the second run's last step used, which denoised_output must be
    for node_id, step in (("14", 1), ("15", 2)):
        document[node_id] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["13", 0], "step": step}}
        document[f"2{node_id}"] = dict(document["20"], inputs=dict(document["20"]["inputs"], sigmas=[node_id, 0]))
        document[f"8{node_id}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"2{node_id}", 0],
                                                                         "vae": ["4", 2]}}
        document[f"9{node_id}"] = {"class_type": "PreviewImage", "inputs": {"images": [f"8{node_id}", 0]}}
    assert capture.run(document).status == "success"
    sigmas = capture.output("13")
    s1, s2 = float(sigmas[1]), float(sigmas[2])
    x1, x2 = capture.output("214")["samples"].double(), capture.output("215")["samples"].double()
    expected = (x1 * s2 - x2 * s1) / (s2 - s1)
    denoised = capture.output("215", 1)["samples"].double()
    torch.testing.assert_close(denoised, expected, rtol=0, atol=2e-3 * float(expected.abs().max()))
    assert not torch.allclose(denoised, x2, atol=0.1)  # halfway, the latent itself is still noisy


@pytest.mark.slow  # several tiny-model image runs: the full suite (make test), not the fast lane
def test_split_sigmas_in_two_passes_equal_one_pass(capture):
    """High then low sigmas (DisableNoise for the second pass) take the same steps as the whole."""
    document = _base()
    _custom_pieces(document, 7, 5.0, "euler", "karras", 6, 1.0)
    document["14"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["13", 0], "step": 2}}
    document["15"] = {"class_type": "DisableNoise", "inputs": {}}
    document["16"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["10", 0], "guider": ["11", 0], "sampler": ["12", 0], "sigmas": ["14", 0], "latent_image": ["5", 0]}}
    document["17"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["15", 0], "guider": ["11", 0], "sampler": ["12", 0], "sigmas": ["14", 1], "latent_image": ["16", 0]}}
    document["818"] = {"class_type": "VAEDecode", "inputs": {"samples": ["17", 0], "vae": ["4", 2]}}
    document["918"] = {"class_type": "PreviewImage", "inputs": {"images": ["818", 0]}}
    result = capture.run(document)
    assert result.status == "success", result.error
    whole, two_pass = capture.output("20")["samples"], capture.output("17")["samples"]
    # the latent is divided by the VAE scale between the passes and multiplied back: rounding only
    torch.testing.assert_close(two_pass, whole, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # several tiny-model image runs: the full suite (make test), not the fast lane
def test_guider_variants(capture):
    document = _base(cfg=1.0)
    _custom_pieces(document, 3, 1.0, "euler", "normal", 3, 1.0)
    document["30"] = {"class_type": "BasicGuider", "inputs": {"model": ["4", 0], "conditioning": ["6", 0]}}
    document["31"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["10", 0], "guider": ["30", 0], "sampler": ["12", 0], "sigmas": ["13", 0], "latent_image": ["5", 0]}}
    # DualCFG with both prompts the same is plain CFG at cfg_cond2_negative
    document["32"] = {"class_type": "DualCFGGuider", "inputs": {
        "model": ["4", 0], "cond1": ["6", 0], "cond2": ["6", 0], "negative": ["7", 0], "cfg_conds": 3.0,
        "cfg_cond2_negative": 6.0, "style": "regular"}}
    document["33"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["10", 0], "guider": ["32", 0], "sampler": ["12", 0], "sigmas": ["13", 0], "latent_image": ["5", 0]}}
    document["34"] = {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0],
                                                            "negative": ["7", 0], "cfg": 6.0}}
    document["35"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["10", 0], "guider": ["34", 0], "sampler": ["12", 0], "sigmas": ["13", 0], "latent_image": ["5", 0]}}
    for node_id in ("31", "33", "35"):
        document[f"8{node_id}"] = {"class_type": "VAEDecode", "inputs": {"samples": [node_id, 0], "vae": ["4", 2]}}
        document[f"9{node_id}"] = {"class_type": "PreviewImage", "inputs": {"images": [f"8{node_id}", 0]}}
    result = capture.run(document)
    assert result.status == "success", result.error
    # BasicGuider is CFG at scale 1: the same single conditional call per step
    assert torch.equal(capture.output("31")["samples"], capture.output("20")["samples"])
    dual, cfg = capture.output("33")["samples"], capture.output("35")["samples"]
    torch.testing.assert_close(dual, cfg, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(cfg, capture.output("20")["samples"], atol=1e-2)


@pytest.mark.slow  # several tiny-model image runs: the full suite (make test), not the fast lane
def test_parametrised_sampler_options_reach_the_sampler(capture):
    document = _base()
    _custom_pieces(document, 11, 5.0, "euler", "normal", 3, 1.0)
    document["40"] = {"class_type": "SamplerEulerAncestral", "inputs": {"eta": 0.0, "s_noise": 1.0}}
    document["41"] = {"class_type": "SamplerEulerAncestral", "inputs": {"eta": 1.0, "s_noise": 1.0}}
    document["42"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler_ancestral"}}
    for sampler_id, out_id in (("40", "43"), ("41", "44"), ("42", "45")):
        document[out_id] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["10", 0], "guider": ["11", 0], "sampler": [sampler_id, 0], "sigmas": ["13", 0],
            "latent_image": ["5", 0]}}
        document[f"8{out_id}"] = {"class_type": "VAEDecode", "inputs": {"samples": [out_id, 0], "vae": ["4", 2]}}
        document[f"9{out_id}"] = {"class_type": "PreviewImage", "inputs": {"images": [f"8{out_id}", 0]}}
    result = capture.run(document)
    assert result.status == "success", result.error
    # eta 0: no fresh noise, every step lands where euler's does
    torch.testing.assert_close(capture.output("43")["samples"], capture.output("20")["samples"], rtol=0, atol=1e-6)
    # eta 1 and s_noise 1 are euler_ancestral's defaults
    assert torch.equal(capture.output("44")["samples"], capture.output("45")["samples"])
    assert not torch.allclose(capture.output("44")["samples"], capture.output("20")["samples"], atol=1e-2)


@pytest.mark.parametrize("node, sampler, defaults, changed", [
    ("SamplerDPMPP_2M_SDE", "dpmpp_2m_sde_gpu", {"solver_type": "midpoint", "eta": 1.0, "s_noise": 1.0,
                                                 "noise_device": "gpu"}, {"solver_type": "heun"}),
    ("SamplerDPMPP_3M_SDE", "dpmpp_3m_sde", {"eta": 1.0, "s_noise": 1.0, "noise_device": "cpu"}, {"eta": 0.5}),
    ("SamplerDPMPP_SDE", "dpmpp_sde_gpu", {"eta": 1.0, "s_noise": 1.0, "r": 0.5, "noise_device": "gpu"}, {"r": 0.3}),
    ("SamplerDPMPP_2S_Ancestral", "dpmpp_2s_ancestral", {"eta": 1.0, "s_noise": 1.0}, {"s_noise": 0.5}),
    ("SamplerLMS", "lms", {"order": 4}, {"order": 1}),  # (3 steps: the last returns the estimate)
    ("SamplerEulerAncestralCFGPP", "euler_ancestral_cfg_pp", {"eta": 1.0, "s_noise": 1.0}, {"eta": 0.5}),
    ("SamplerDPMAdaptative", "dpm_adaptive", {"order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05,
                                              "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0, "accept_safety": 0.81,
                                              "eta": 0.0, "s_noise": 1.0}, {"order": 2}),
    ("SamplerER_SDE", "er_sde", {"solver_type": "ER-SDE", "max_stage": 3, "eta": 1.0, "s_noise": 1.0},
     {"s_noise": 1.05}),
    ("SamplerSASolver", "sa_solver", {"model": ["4", 0], "eta": 1.0, "sde_start_percent": 0.2,
                                      "sde_end_percent": 0.8, "s_noise": 1.0, "predictor_order": 3,
                                      "corrector_order": 4, "use_pece": False, "simple_order_2": False},
     {"sde_end_percent": 0.5}),
    ("SamplerSEEDS2", "seeds_2", {"solver_type": "phi_1", "eta": 1.0, "s_noise": 1.0, "r": 0.5},
     {"solver_type": "phi_2"}),
])
def test_each_parametrised_sampler_node_is_its_sampler_with_options(capture, node, sampler, defaults, changed):
    """At ComfyUI's defaults a sampler node samples exactly as KSamplerSelect's name does (so
    the node picks the right sampler and its defaults are the function's); a changed input
    changes the result (so it reaches the function)."""
    document = _base(size=32)
    _custom_pieces(document, 5, 5.0, sampler, "karras", 3, 1.0)
    for node_id in ("3", "21", "83", "821", "93", "921"):
        document.pop(node_id)
    for suffix, inputs in (("0", defaults), ("1", defaults | changed)):
        document[f"6{suffix}"] = {"class_type": node, "inputs": inputs}
        document[f"7{suffix}"] = dict(document["20"], inputs=dict(document["20"]["inputs"], sampler=[f"6{suffix}", 0]))
        document[f"87{suffix}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"7{suffix}", 0], "vae": ["4", 2]}}
        document[f"97{suffix}"] = {"class_type": "PreviewImage", "inputs": {"images": [f"87{suffix}", 0]}}
    result = capture.run(document)
    assert result.status == "success", result.error
    by_name, at_defaults, changed_out = (capture.output(n)["samples"] for n in ("20", "70", "71"))
    assert torch.isfinite(changed_out).all()
    assert torch.equal(at_defaults, by_name)
    assert not torch.equal(changed_out, by_name)


@pytest.mark.parametrize("node, inputs, message", [
    ("SamplerDPMAdaptative", {"order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05, "pcoeff": 0.0, "icoeff": 1.0,
                              "dcoeff": 0.0, "accept_safety": 0.81, "eta": 0.5, "s_noise": 1.0}, "eta"),
])
def test_settings_we_do_not_implement_are_refused_not_ignored(capture, node, inputs, message):
    """DPMAdaptative's PID coefficients and eta (its ancestral steps) are not implemented."""
    document = _base()
    _custom_pieces(document, 5, 5.0, "euler", "karras", 2, 1.0)
    document["12"] = {"class_type": node, "inputs": inputs}
    result = capture.run(document)
    assert result.status == "error"
    assert result.error["node_id"] == "12" and message in result.error["exception_message"]


def test_add_noise_then_disabled_noise_is_sampling_with_noise(capture):
    """AddNoise + DisableNoise on an img2img schedule = RandomNoise, up to float rounding."""
    document = _base()
    _custom_pieces(document, 9, 5.0, "euler", "normal", 4, 0.5)  # denoise 0.5: not from pure noise
    document["50"] = {"class_type": "AddNoise", "inputs": {"model": ["4", 0], "noise": ["10", 0],
                                                           "sigmas": ["13", 0], "latent_image": ["5", 0]}}
    document["51"] = {"class_type": "DisableNoise", "inputs": {}}
    document["52"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["51", 0], "guider": ["11", 0], "sampler": ["12", 0], "sigmas": ["13", 0], "latent_image": ["50", 0]}}
    document["852"] = {"class_type": "VAEDecode", "inputs": {"samples": ["52", 0], "vae": ["4", 2]}}
    document["952"] = {"class_type": "PreviewImage", "inputs": {"images": ["852", 0]}}
    result = capture.run(document)
    assert result.status == "success", result.error
    torch.testing.assert_close(capture.output("52")["samples"], capture.output("20")["samples"], rtol=1e-4, atol=1e-4)


def _executed(capture: Capture) -> set[str]:
    return {data["node"] for event, data in capture.events if event == "executing" and data.get("node")}


def test_a_changed_schedule_reruns_only_what_follows_it(capture):
    document = _base(size=48)  # a size no other test uses: the module's cache is shared
    _custom_pieces(document, 42, 5.0, "euler", "normal", 3, 1.0)
    for node_id in ("3", "21", "83", "821", "93", "921"):
        document.pop(node_id)
    assert capture.run(document).status == "success"
    assert "5" in _executed(capture)
    assert capture.run(document).status == "success"
    assert _executed(capture) == set()  # all cached
    document["13"]["inputs"]["steps"] = 5  # (no other test asks for 5 steps)
    assert capture.run(document).status == "success"
    assert _executed(capture) == {"13", "20", "820", "920"}
    document["12"]["inputs"]["sampler_name"] = "heun"
    assert capture.run(document).status == "success"
    assert _executed(capture) == {"12", "20", "820", "920"}


def test_a_guider_unloads_with_the_models(capture):
    """A cached GUIDER holds its MODEL; it belongs to the models pool that POST /free drops."""
    document = _base()
    _custom_pieces(document, 42, 5.0, "euler", "normal", 2, 1.0)
    capture.run(document)
    guider_key = capture._signature("11")
    assert capture.executor.cache.get(guider_key).pool == "models"
    capture.executor.cache.drop_pool("models")
    assert capture.executor.cache.get(guider_key) is None


# --- the example workflows ---------------------------------------------------------------------


def test_example_workflow_ui_twin_converts_to_the_api_workflow(env):
    registry, _ = env
    ui = json.loads((ROOT / "workflows" / "custom_sampling.json").read_text())
    api = json.loads((ROOT / "workflows" / "custom_sampling_api.json").read_text())
    assert ui_to_api(ui, registry) == api


@pytest.mark.slow  # several tiny-model image runs: the full suite (make test), not the fast lane
@pytest.mark.parametrize("name", ["custom_sampling_api.json", "custom_sampling.json"])
def test_example_workflow_makes_txt2imgs_image(env, capture, name):
    """The example is txt2img's settings taken apart: the same PNG pixels come out."""
    _, runtime = env
    output = runtime.folders.output
    images = []
    for document_name in (name, "txt2img_api.json"):
        result = capture.run(json.loads((ROOT / "workflows" / document_name).read_text()))
        assert result.status == "success", result.error
        (entry,) = result.outputs["9"]["images"]
        images.append(np.asarray(Image.open(output / entry["subfolder"] / entry["filename"])))
    assert images[0].shape == (128, 128, 3)
    assert np.array_equal(images[0], images[1])


def test_er_sde_solver_types_follow_comfyui():
    """SamplerER_SDE's "ODE" (and "Reverse-time SDE" with eta 0) is er_sde with f(s) = s and
    no noise; "Reverse-time SDE" uses f(s) = s^(eta + 1) with noise: checked against the
    solver function called with those scale functions on a small analytic denoiser."""
    import numpy as np

    from nodes.custom_sampling import SamplerER_SDE
    from nodes.sampling.noise import GaussianNoise
    from nodes.sampling.samplers_sde_extra import sample_er_sde

    def run(choice, **direct):
        x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(3)) * 10.0
        sigmas = torch.tensor([10.0, 4.0, 1.5, 0.5, 0.0])
        model = lambda x, sigma, **_: x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)  # noqa: E731  x0 of N(0, I) data
        noise = GaussianNoise(x, 7)
        if choice is not None:
            options = dict(choice.options)
            return sample_er_sde(model, x, sigmas, noise_sampler=noise, **options)
        return sample_er_sde(model, x, sigmas, noise_sampler=noise, **direct)

    def node(solver_type, eta=1.0):
        (choice,) = SamplerER_SDE().execute(solver_type, 3, eta, 1.0)
        assert choice.name == "er_sde"
        return choice

    ode = run(node("ODE"))
    assert torch.equal(ode, run(None, s_noise=0.0, noise_scaler=lambda s: s))
    assert torch.equal(run(node("Reverse-time SDE", eta=0.0)), ode)
    reverse = run(node("Reverse-time SDE", eta=0.5))
    assert torch.equal(reverse, run(None, s_noise=1.0, noise_scaler=lambda s: np.power(s, 1.5)))
    assert not torch.equal(reverse, ode) and not torch.equal(reverse, run(node("ER-SDE")))
