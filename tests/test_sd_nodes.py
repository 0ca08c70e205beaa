"""Generation nodes end to end on the tiny generated checkpoints (SD1, SD2-v, SDXL, diffusers)."""

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from graph import Executor, Folders, build_registry, is_ui_format, prepare, ui_to_api
from nodes.models.folders import ModelFolders
from nodes.sd.runtime import DeviceSettings, Runtime

pytest_plugins = ["tests.fixtures.tiny_models"]


@pytest.fixture(scope="module")
def env(tiny_checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("sd_env")
    models = ModelFolders(root / "models")
    (root / "models" / "checkpoints").mkdir(parents=True)
    (root / "models" / "vae").mkdir(parents=True)
    for name in ("sd1", "sd2_v", "sdxl"):
        shutil.copy(getattr(tiny_checkpoints, name), root / "models" / "checkpoints" / f"tiny_{name}.safetensors")
    shutil.copytree(tiny_checkpoints.diffusers_sd1, root / "models" / "checkpoints" / "tiny_diffusers")
    shutil.copy(tiny_checkpoints.vae, root / "models" / "vae" / "tiny_vae.safetensors")
    folders = Folders.under(root)
    runtime = Runtime(folders=folders, models=models, settings=DeviceSettings(device="cpu", dtype=torch.float32))
    return build_registry("nodes", None), runtime


def txt2img(ckpt="tiny_sd1.safetensors", seed=1, steps=3, sampler="euler", scheduler="normal", batch=1,
            text="a red circle", size=64, cfg=7.0):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": seed, "steps": steps, "cfg": cfg,
                                                   "sampler_name": sampler, "scheduler": scheduler,
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }


class Capture:
    """Runs workflows and keeps the IMAGE given to PreviewImage (via the output cache)."""

    def __init__(self, env):
        self.registry, self.runtime = env
        self.executor = Executor(folders=self.runtime.folders, runtime=self.runtime)
        self.events = []

    def run(self, document, **kwargs):
        checked = prepare(document, self.registry, runtime=self.runtime)
        assert checked.ok, checked.response()
        self.events = []
        self.plan = checked.plan
        return self.executor.execute(checked.plan, on_event=lambda e, d: self.events.append((e, d)), **kwargs)

    def output(self, node_id, slot=0):
        return self.executor.cache.get(self._signature(node_id)).outputs[slot][0]

    def _signature(self, node_id):
        # The executor keeps signatures per run; recompute through a dry run of the cache keys.
        from graph.executor import _PromptRun

        run = _PromptRun(self.executor, self.plan, "sig", None, None, None)
        run._compute_signatures()
        return run.signatures[node_id]


@pytest.mark.parametrize("ckpt", ["tiny_sd1.safetensors", "tiny_sd2_v.safetensors", "tiny_sdxl.safetensors",
                                  "tiny_diffusers"])
def test_txt2img_runs_on_every_family(env, ckpt):
    capture = Capture(env)
    result = capture.run(txt2img(ckpt))
    assert result.status == "success", result.error["traceback"][-3:]
    image = capture.output("6")
    assert image.shape == (1, 64, 64, 3) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    progress = [d for e, d in capture.events if e == "progress"]
    assert [p["value"] for p in progress] == [1, 2, 3] and all(p["node"] == "5" for p in progress)
    previews = [d for e, d in capture.events if e == "preview"]
    assert len(previews) == 3 and previews[0]["image"].size == (8, 8)


def test_same_seed_same_image_and_batches_differ(env):
    capture = Capture(env)
    capture.run(txt2img(seed=5, batch=2))
    first = capture.output("5")["samples"]
    other = Capture(env)
    other.run(txt2img(seed=5, batch=2))
    assert torch.equal(first, other.output("5")["samples"])
    assert not torch.allclose(first[0], first[1])
    other.run(txt2img(seed=6, batch=2))
    assert not torch.allclose(first, other.output("5")["samples"])


def test_changing_the_seed_reruns_only_the_sampler_and_after(env):
    capture = Capture(env)
    capture.run(txt2img(seed=1))
    result = capture.run(txt2img(seed=2))
    assert result.executed == ["5", "6", "7"]


def test_denoise_zero_returns_the_input_latent(env):
    capture = Capture(env)
    document = txt2img()
    document["5"]["inputs"]["denoise"] = 0.0
    document["4"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["8", 0], "vae": ["1", 2]}}
    document["8"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                            "color": 0x3366CC}}
    assert capture.run(document).status == "success"
    assert torch.equal(capture.output("5")["samples"], capture.output("4")["samples"])


def test_interrupt_stops_within_one_step(env):
    capture = Capture(env)
    interrupt = threading.Event()
    steps_seen = []

    def on_event(name, data):
        if name == "progress":
            steps_seen.append(data["value"])
            if data["value"] == 2:
                interrupt.set()

    checked = prepare(txt2img(steps=10), capture.registry, runtime=capture.runtime)
    result = capture.executor.execute(checked.plan, on_event=on_event, interrupt=interrupt)
    assert result.status == "interrupted" and steps_seen == [1, 2]


def test_unknown_sampler_and_scheduler_are_refused_at_validation(env):
    registry, runtime = env
    document = txt2img()
    document["5"]["inputs"]["sampler_name"] = "restart"  # not a KSampler name (dpm_fast now is)
    document["5"]["inputs"]["scheduler"] = "turbo"
    checked = prepare(document, registry, runtime=runtime)
    kinds = [(e["type"], e["extra_info"]["input_name"]) for e in checked.node_errors["5"]["errors"]]
    assert kinds == [("value_not_in_list", "sampler_name"), ("value_not_in_list", "scheduler")]


def test_missing_checkpoint_is_a_validation_error(env):
    registry, runtime = env
    checked = prepare(txt2img(ckpt="nope.safetensors"), registry, runtime=runtime)
    assert checked.node_errors["1"]["errors"][0]["type"] == "value_not_in_list"


def test_prompt_length_weights_and_clip_skip_change_the_conditioning(env):
    capture = Capture(env)
    long_text = ", ".join(["a red circle on a blue background"] * 12)
    document = txt2img(text=long_text)
    document["9"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a (red:1.5) circle", "clip": ["1", 1]}}
    document["10"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 1], "stop_at_clip_layer": -2}}
    document["11"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["10", 0]}}
    document["12"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}}
    for node in ("9", "11", "12"):
        document[f"p{node}"] = {"class_type": "KSampler", "inputs": dict(document["5"]["inputs"], positive=[node, 0])}
        document[f"d{node}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"p{node}", 0], "vae": ["1", 2]}}
        document[f"v{node}"] = {"class_type": "PreviewImage", "inputs": {"images": [f"d{node}", 0]}}
    result = capture.run(document)
    assert result.status == "success", result.error["traceback"][-3:]
    long_cond = capture.output("2")[0][0]
    assert long_cond.shape[1] == 77 * 2  # 95 tokens -> two chunks of at most 75
    plain, weighted, skipped = (capture.output(n)[0][0] for n in ("12", "9", "11"))
    assert plain.shape == weighted.shape == skipped.shape == (1, 77, 32)
    assert not torch.allclose(plain, weighted) and not torch.allclose(plain, skipped)
    assert torch.allclose(plain[:, :2], weighted[:, :2])  # start token and "a" keep weight 1


def test_sdxl_conditioning_carries_the_pooled_embedding(env):
    capture = Capture(env)
    assert capture.run(txt2img("tiny_sdxl.safetensors")).status == "success"
    ((cond, extras),) = capture.output("2")
    assert cond.shape == (1, 77, 64) and extras["pooled_output"].shape == (1, 32)


def test_ksampler_advanced_splits_the_schedule(env):
    capture = Capture(env)
    document = txt2img(steps=4)
    base = {k: v for k, v in document["5"]["inputs"].items() if k not in ("seed", "denoise")}
    document["5"] = {"class_type": "KSamplerAdvanced", "inputs": dict(
        base, add_noise="enable", noise_seed=3, start_at_step=0, end_at_step=2, return_with_leftover_noise="enable")}
    document["8"] = {"class_type": "KSamplerAdvanced", "inputs": dict(
        base, latent_image=["5", 0], add_noise="disable", noise_seed=3, start_at_step=2, end_at_step=10000,
        return_with_leftover_noise="disable")}
    document["6"]["inputs"]["samples"] = ["8", 0]
    document["9"] = {"class_type": "KSampler", "inputs": dict(document["5"]["inputs"] | {"seed": 3, "denoise": 1.0})}
    for key in ("add_noise", "noise_seed", "start_at_step", "end_at_step", "return_with_leftover_noise"):
        document["9"]["inputs"].pop(key)
    document["10"] = {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}}
    document["11"] = {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}}
    assert capture.run(document).status == "success"
    progress = [d["node"] for e, d in capture.events if e == "progress"]
    assert progress.count("5") == 2 and progress.count("8") == 2
    # two halves with leftover noise equal one full run with the same seed
    assert torch.allclose(capture.output("8")["samples"], capture.output("9")["samples"], atol=1e-4)


def test_vae_loader_and_encode_decode_roundtrip_shapes(env):
    capture = Capture(env)
    document = {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_vae.safetensors"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 70, "height": 36, "batch_size": 2, "color": 0xFF0000}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 0]}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    assert capture.run(document).status == "success"
    assert capture.output("3")["samples"].shape == (2, 4, 4, 8)
    assert capture.output("4").shape == (2, 32, 64, 3)


WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
EXAMPLES = ["txt2img", "img2img", "hires_fix"]


def _load_example(name, registry):
    """An example workflow as an API-format prompt (UI-format files converted as POST /prompt does)."""
    document = json.loads((WORKFLOWS / name).read_text())
    return ui_to_api(document, registry) if is_ui_format(document) else document


def _canonical(prompt):
    """A prompt's graph without its node ids: each node as its class, title, constants and the
    canonical form of what its links point at, as a sorted list."""
    def describe(node_id, depth=0):
        assert depth < 100, "cycle"
        entry = prompt[node_id]
        inputs = {name: ["link", describe(value[0], depth + 1), value[1]]
                  if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) else value
                  for name, value in entry["inputs"].items()}
        return {"class_type": entry["class_type"], "title": entry.get("_meta", {}).get("title"), "inputs": inputs}
    return sorted(json.dumps(describe(node_id), sort_keys=True) for node_id in prompt)


@pytest.mark.parametrize("name", EXAMPLES)
def test_ui_example_converts_to_its_api_twin(env, name):
    registry, _ = env
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    assert is_ui_format(ui) and ui["version"] == 0.4
    api = json.loads((WORKFLOWS / f"{name}_api.json").read_text())
    assert _canonical(ui_to_api(ui, registry)) == _canonical(api)
    # Well-formed for the editor: every link is listed on both of its ends, ids are in range.
    nodes = {node["id"]: node for node in ui["nodes"]}
    assert max(nodes) <= ui["last_node_id"] and len(ui["links"]) <= ui["last_link_id"]
    for link_id, source, slot, target, target_slot, link_type in ui["links"]:
        assert link_id in nodes[source]["outputs"][slot]["links"]
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        assert nodes[source]["outputs"][slot]["type"] == link_type == nodes[target]["inputs"][target_slot]["type"]
    # Laid out left to right: every link goes from a node to one further right.
    for _, source, _, target, _, _ in ui["links"]:
        assert nodes[source]["pos"][0] + nodes[source]["size"][0] <= nodes[target]["pos"][0], (source, target)


def test_txt2img_example_is_the_house_model_default():
    api = json.loads((WORKFLOWS / "txt2img_api.json").read_text())
    (latent,) = [n for n in api.values() if n["class_type"] == "EmptyLatentImage"]
    (sampler,) = [n for n in api.values() if n["class_type"] == "KSampler"]
    assert (latent["inputs"]["width"], latent["inputs"]["height"], sampler["inputs"]["steps"]) == (128, 128, 20)


@pytest.mark.parametrize("name", [f"{e}{suffix}.json" for e in EXAMPLES for suffix in ("_api", "")])
def test_example_workflows_run(env, name):
    from PIL import Image

    registry, runtime = env
    document = _load_example(name, registry)
    by_class = {}
    for node_id, node in document.items():
        by_class.setdefault(node["class_type"], []).append(node_id)
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
    (loader,) = by_class["CheckpointLoaderSimple"]
    document[loader]["inputs"]["ckpt_name"] = "tiny_sd1.safetensors"  # the house model stands in later
    folders = runtime.folders
    folders.input.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (96, 64), (200, 30, 30)).save(folders.input / "example.png")
    capture = Capture(env)
    result = capture.run(document)
    assert result.status == "success", result.error
    (save,) = by_class["SaveImage"]
    (entry,) = result.outputs[save]["images"]
    saved = Image.open(folders.output / entry["subfolder"] / entry["filename"])
    expected = {"txt2img": (128, 128), "img2img": (96, 64), "hires_fix": (192, 192)}
    assert saved.size == expected[name.removesuffix(".json").removesuffix("_api")]


def sdxl_encode(text_g, text_l, **sizes):
    inputs = {"clip": ["1", 1], "width": 1024, "height": 1024, "crop_w": 0, "crop_h": 0, "target_width": 1024,
              "target_height": 1024, "text_g": text_g, "text_l": text_l}
    return {"class_type": "CLIPTextEncodeSDXL", "inputs": {**inputs, **sizes}}


def test_clip_text_encode_sdxl_prompts_and_size_conditioning(env):
    """The same prompt for both encoders equals CLIPTextEncode; each half of the result is
    its own encoder's prompt (the shorter padded with the empty prompt's chunk); the size
    inputs reach the UNet's time ids, and the sizes of the latent are the defaults."""
    capture = Capture(env)
    long_l = ", ".join(["a red circle on a blue background"] * 12)  # two chunks for CLIP-L
    document = txt2img("tiny_sdxl.safetensors", size=64)
    document["s1"] = sdxl_encode("a red circle", "a red circle", width=64, height=64, target_width=64,
                                 target_height=64)
    document["s2"] = sdxl_encode("a red circle", long_l)
    document["g"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}}
    document["l"] = {"class_type": "CLIPTextEncode", "inputs": {"text": long_l, "clip": ["1", 1]}}
    document["s3"] = sdxl_encode("a red circle", "a red circle", width=2048, height=512, crop_w=32, crop_h=64)
    for node in ("s1", "s3", "s2", "g", "l"):  # a sampler each, so that every encoder runs
        document[f"k{node}"] = {"class_type": "KSampler", "inputs": dict(document["5"]["inputs"], positive=[node, 0])}
        document[f"d{node}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"k{node}", 0], "vae": ["1", 2]}}
        document[f"v{node}"] = {"class_type": "PreviewImage", "inputs": {"images": [f"d{node}", 0]}}
    result = capture.run(document)
    assert result.status == "success", result.error

    ((same, extras),) = capture.output("s1")
    ((plain, plain_extras),) = capture.output("2")
    assert torch.equal(same, plain) and torch.equal(extras["pooled_output"], plain_extras["pooled_output"])
    assert (extras["width"], extras["crop_h"], extras["target_height"]) == (64, 0, 64)
    # Same sizes as the latent's defaults: the same samples as the plain prompt.
    assert torch.equal(capture.output("ks1")["samples"], capture.output("5")["samples"])
    assert not torch.allclose(capture.output("ks3")["samples"], capture.output("5")["samples"])  # sizes reach the UNet

    ((mixed, mixed_extras),) = capture.output("s2")
    ((g_only, g_extras),) = capture.output("g")
    ((l_only, _),) = capture.output("l")
    width_l = 32  # CLIP-L's width in the tiny SDXL; then bigG's
    assert mixed.shape == (1, 154, 64) and l_only.shape == (1, 154, 64)
    assert torch.equal(mixed[:, :, :width_l], l_only[:, :, :width_l])  # CLIP-L: the long prompt
    assert torch.equal(mixed[:, :77, width_l:], g_only[:, :, width_l:])  # bigG: the short one, then padding
    assert torch.equal(mixed_extras["pooled_output"], g_extras["pooled_output"])  # pooled comes from bigG


def test_clip_text_encode_sdxl_refuses_an_sd1_clip(env):
    capture = Capture(env)
    document = txt2img("tiny_sd1.safetensors")
    document["s"] = sdxl_encode("a", "a")
    document["5"]["inputs"]["positive"] = ["s", 0]
    result = capture.run(document)
    assert result.status == "error" and "needs an SDXL CLIP" in result.error["exception_message"]


def test_conditioning_timestep_range_through_the_sampler(env):
    """A range covering all of sampling changes nothing; red for the first half and blue for
    the second gives neither the all-red nor the all-blue result."""
    capture = Capture(env)
    document = txt2img(steps=4)
    document["b"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a blue square", "clip": ["1", 1]}}
    document["all"] = {"class_type": "ConditioningSetTimestepRange",
                       "inputs": {"conditioning": ["2", 0], "start": 0.0, "end": 1.0}}
    document["r1"] = {"class_type": "ConditioningSetTimestepRange",
                      "inputs": {"conditioning": ["2", 0], "start": 0.0, "end": 0.5}}
    document["b2"] = {"class_type": "ConditioningSetTimestepRange",
                      "inputs": {"conditioning": ["b", 0], "start": 0.5, "end": 1.0}}
    document["split"] = {"class_type": "ConditioningCombine",
                         "inputs": {"conditioning_1": ["r1", 0], "conditioning_2": ["b2", 0]}}
    for node in ("all", "split", "b"):
        document[f"k{node}"] = {"class_type": "KSampler", "inputs": dict(document["5"]["inputs"], positive=[node, 0])}
        document[f"d{node}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"k{node}", 0], "vae": ["1", 2]}}
        document[f"v{node}"] = {"class_type": "PreviewImage", "inputs": {"images": [f"d{node}", 0]}}
    result = capture.run(document)
    assert result.status == "success", result.error
    red, blue = capture.output("5")["samples"], capture.output("kb")["samples"]
    assert torch.allclose(capture.output("kall")["samples"], red, atol=1e-6)
    split = capture.output("ksplit")["samples"]
    assert (split - red).abs().max() > 1e-3 and (split - blue).abs().max() > 1e-3


def test_checkpoint_handles_follow_the_model_handle_protocol(env):
    """MODEL, CLIP and VAE (and a LoRA'd or CLIP-skipped derivative) are model handles: in the
    cache's "models" pool, so POST /free ``unload_models`` and ``--model-cache-budget`` cover
    them, with the modules placement moves."""
    from nodes.sd.runtime import ModelHandle

    capture = Capture(env)
    assert capture.run(txt2img()).status == "success"
    model, clip, vae = (capture.output("1", slot) for slot in range(3))
    for handle, modules in ((model, (model.unet,)), (clip, tuple(clip.encoders)), (vae, (vae.vae,))):
        assert isinstance(handle, ModelHandle) and handle.cache_pool == "models"
        assert handle.modules() == modules and handle.size_bytes() > 0
    skipped = clip.with_last_layer(-2)
    assert isinstance(skipped, ModelHandle) and skipped.modules() == clip.modules()
    cache = capture.executor.cache
    assert cache.pool_bytes("models") >= model.size_bytes() + clip.size_bytes() + vae.size_bytes()
    cache.drop_pool("models")
    assert cache.pool_bytes("models") == 0
    assert "1" in capture.run(txt2img(seed=2)).executed  # the sampler runs again: the checkpoint is loaded again
