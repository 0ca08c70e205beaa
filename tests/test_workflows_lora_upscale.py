"""The LoRA, upscale-with-model and hires-fix-with-model-upscale example workflows, in API and UI
format, run on the tiny SD1 checkpoint with a generated LoRA and a generated ESRGAN."""

import json
from pathlib import Path

import pytest
from PIL import Image

from graph import ui_to_api
from tests.fixtures.model_env import model_env
from tests.fixtures.tiny_loras import random_lora, write_kohya
from tests.fixtures.tiny_upscalers import write_tiny_esrgan
from tests.test_sd_nodes import Capture

pytest_plugins = ["tests.fixtures.tiny_models"]

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
SUBSTITUTES = {"ckpt_name": "tiny_sd1.safetensors", "lora_name": "tiny_lora.safetensors",
               "model_name": "tiny_esrgan_x2.safetensors"}


@pytest.fixture(scope="module")
def env(tiny_checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("workflow_env")
    tiny = tiny_checkpoints.models["sd1"]
    lora = write_kohya(random_lora(tiny.unet, tiny.text_encoders, seed=5), root / "lora.safetensors")
    upscaler = write_tiny_esrgan(root / "esrgan.safetensors", scale=2)
    registry, runtime = model_env(root, {"checkpoints": {"tiny_sd1.safetensors": tiny_checkpoints.sd1},
                                          "loras": {"tiny_lora.safetensors": lora},
                                          "upscale_models": {"tiny_esrgan_x2.safetensors": upscaler}})
    runtime.folders.input.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 32), (200, 30, 30)).save(runtime.folders.input / "example.png")
    return registry, runtime


def tiny_version(api):
    """The workflow on the tiny models: model files substituted, 2 sampler steps."""
    for node in api.values():
        for key, value in SUBSTITUTES.items():
            if key in node["inputs"]:
                node["inputs"][key] = value
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
    return api


@pytest.mark.parametrize("name, size", [("lora", (128, 128)), ("upscale_with_model", (96, 64)),
                                        ("hires_fix_model_upscale", (192, 192))])
@pytest.mark.parametrize("form", ["api", "ui"])
def test_example_workflow_runs(env, name, size, form):
    registry, runtime = env
    api = json.loads((WORKFLOWS / f"{name}_api.json").read_text())
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    assert ui_to_api(ui, registry) == api  # the two files are the same workflow
    if form == "api":
        document = tiny_version(api)
    else:  # run the editor's document itself: substitute in its widgets
        document = ui
        for node in document["nodes"]:
            if node["type"] in ("CheckpointLoaderSimple", "UpscaleModelLoader"):
                node["widgets_values"][0] = SUBSTITUTES["ckpt_name" if "Checkpoint" in node["type"] else "model_name"]
            elif node["type"] in ("LoraLoader", "LoraLoaderModelOnly"):
                node["widgets_values"][0] = SUBSTITUTES["lora_name"]
            elif node["type"] == "KSampler":
                node["widgets_values"][2] = 2  # seed, control, steps
    capture = Capture(env)
    result = capture.run(document)
    assert result.status == "success", result.error
    (entry,) = result.outputs["9"]["images"]
    saved = Image.open(runtime.folders.output / entry["subfolder"] / entry["filename"])
    assert saved.size == size
    if name == "lora":
        model = capture.output("11", 0)
        assert [p.strength for p in model.patches] == [0.8, 0.5]  # two LoRAs stacked on the UNet
