"""unCLIP on a tiny SD2.1-unCLIP checkpoint, and SDXL revision on the tiny SDXL checkpoint.

The image vector is checked against ComfyUI's ``unclip_adm`` written out here from
independent parts: diffusers' ``squaredcos_cap_v2`` schedule and timestep embedding, and
noise drawn with the sampling seed minus 10. Sampling checks: strength 0 (and no
unCLIPConditioning) gives exactly the plain image, any other strength changes it; the
tiny checkpoint's UNet, as loaded, computes what the model it was written from computes
with that vector. ComfyUI's own SDXL revision template converts, validates and runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.models.embeddings import get_timestep_embedding
from PIL import Image

from graph import Executor, Folders, build_registry, prepare, ui_to_api
from nodes.models.detect import detect, read_header
from nodes.models.errors import UnknownCheckpointError
from nodes.models.folders import ModelFolders
from nodes.sd.clip_vision_encode import ClipVisionOutput
from nodes.sd.runtime import DeviceSettings, Runtime
from nodes.sd.unet_call import conditioning_regions
from tests.fixtures.model_env import run_successfully, run_workflow
from tests.fixtures.tiny_clip_vision import (
    build_tiny_unclip,
    tiny_vision_model,
    write_tiny_unclip,
    write_vision,
)
from tests.utility_support import CAPTURED, Capture

pytest_plugins = ["tests.fixtures.tiny_models"]
TEMPLATE = Path(__file__).resolve().parent / "fixtures" / "comfy_templates" / "sdxl_revision_text_prompts.json"
ABAR = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod


def expected_adm(embed: torch.Tensor, amount: float, seed: int, strength: float = 1.0) -> torch.Tensor:
    """ComfyUI's augmentation of one embedding [P]: [sqrt(abar) e + sqrt(1 - abar) n, emb(t)] * strength."""
    t = round(999 * amount)
    noise = torch.randn(1, embed.shape[-1], generator=torch.Generator().manual_seed(seed - 10))
    z = ABAR[t].sqrt() * embed.reshape(1, -1) + (1 - ABAR[t]).sqrt() * noise
    level = get_timestep_embedding(torch.tensor([t]), embed.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0)
    return torch.cat([z, level], dim=1) * strength


@pytest.fixture(scope="module")
def unclip_parts():
    vision = tiny_vision_model(seed=21, projection_dim=24)
    return build_tiny_unclip(22, vision), vision


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_checkpoints, unclip_parts):
    models, vision = unclip_parts
    root = tmp_path_factory.mktemp("unclip")
    checkpoints, clip_vision = root / "models" / "checkpoints", root / "models" / "clip_vision"
    checkpoints.mkdir(parents=True)
    clip_vision.mkdir(parents=True)
    write_tiny_unclip(checkpoints / "tiny_unclip.safetensors", models, vision)
    write_tiny_unclip(checkpoints / "tiny_unclip_no_embedder.safetensors", models, vision, with_embedder=False)
    shutil.copy(tiny_checkpoints.sdxl, checkpoints / "tiny_sdxl.safetensors")
    write_vision(clip_vision / "tiny_g.safetensors", tiny_vision_model(seed=23, projection_dim=32), "hf")
    write_vision(clip_vision / "tiny_h.safetensors", vision, "open_clip")
    runtime = Runtime(folders=Folders.under(root), models=ModelFolders(root / "models"),
                      settings=DeviceSettings(device="cpu", dtype=torch.float32))
    for folder in (runtime.folders.input, runtime.folders.output, runtime.folders.temp):
        folder.mkdir(parents=True, exist_ok=True)
    registry = build_registry("nodes", None)
    registry.register(Capture)
    return registry, runtime


def image_of(env, document: dict) -> torch.Tensor:
    run_successfully(env, document)
    return CAPTURED["image"][-1]


def sample_document(loader: str, ckpt: str, clip_vision: str | None, strength: float | None,
                    noise_augmentation: float = 0.0, seed: int = 3, color: int = 0x2266AA) -> dict:
    """txt2img; with ``strength`` not None, the positive goes through unCLIPConditioning of an image."""
    vision = ["1", 3] if clip_vision is None else ["20", 0]
    doc = {
        "1": {"class_type": loader, "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": seed, "steps": 3, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "TestCapture", "inputs": {"value": ["6", 0], "key": "image"}},
    }
    if clip_vision is not None:
        doc["20"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": clip_vision}}
    if strength is not None:
        doc["10"] = {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 40, "batch_size": 1,
                                                            "color": color}}
        doc["11"] = {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": vision, "image": ["10", 0],
                                                                  "crop": "center"}}
        doc["12"] = {"class_type": "unCLIPConditioning", "inputs": {
            "conditioning": ["2", 0], "clip_vision_output": ["11", 0], "strength": strength,
            "noise_augmentation": noise_augmentation}}
        doc["5"]["inputs"]["positive"] = ["12", 0]
    return doc


def unclip_document(strength: float | None, **kwargs: Any) -> dict:
    return sample_document("unCLIPCheckpointLoader", "tiny_unclip.safetensors", None, strength, **kwargs)


def revision_document(strength: float | None, clip_vision: str = "tiny_g.safetensors", **kwargs: Any) -> dict:
    return sample_document("CheckpointLoaderSimple", "tiny_sdxl.safetensors", clip_vision, strength, **kwargs)


def _outputs(env, document: dict, node: str, slots: range) -> list:
    """Some outputs of ``node``, captured."""
    for slot in slots:
        document[f"c{slot}"] = {"class_type": "TestCapture", "inputs": {"value": [node, slot], "key": f"out{slot}"}}
    run_successfully(env, document)
    return [CAPTURED[f"out{slot}"][-1] for slot in slots]


# --- detection and loading ---------------------------------------------------------------------


def test_an_unclip_checkpoint_is_detected_by_structure(env):
    _, runtime = env
    shapes, metadata = read_header(runtime.models.resolve("checkpoints", "tiny_unclip.safetensors"))
    info = detect(shapes, metadata)
    assert (info.family, info.adm_channels, info.prediction_type) == ("sd2", 48, "v_prediction")
    bare = {k: v for k, v in shapes.items() if not k.startswith(("noise_augmentor.", "embedder."))}
    with pytest.raises(UnknownCheckpointError):  # an SD2 label_emb of no unCLIP width and no unCLIP parts
        detect(bare, metadata)


def test_the_loaded_unet_computes_what_the_written_model_computes(env, unclip_parts):
    models, vision = unclip_parts
    model, vision_handle = _outputs(env, {"1": {"class_type": "unCLIPCheckpointLoader",
                                                "inputs": {"ckpt_name": "tiny_unclip.safetensors"}}}, "1", range(0, 4, 3))
    assert model.family == "sd2" and model.prediction == "v"
    pixels = torch.rand(1, 3, 28, 28, generator=torch.Generator().manual_seed(4))
    assert torch.equal(vision_handle.model(pixel_values=pixels).image_embeds, vision(pixel_values=pixels).image_embeds)
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    context, labels = torch.randn(1, 77, 32), torch.randn(1, 48)
    ours = model.unet(x, t, encoder_hidden_states=context, class_labels=labels).sample
    theirs = models.unet(x, t, encoder_hidden_states=context, class_labels=labels).sample
    assert torch.equal(ours, theirs)


# --- the image vector --------------------------------------------------------------------------


def _output(embeds: torch.Tensor) -> ClipVisionOutput:
    hidden = torch.zeros(embeds.shape[0], 5, 32)
    return ClipVisionOutput(embeds, hidden, hidden)


def test_class_labels_follow_comfyuis_unclip_adm(env):
    model, = _outputs(env, {"1": {"class_type": "CheckpointLoaderSimple",
                                  "inputs": {"ckpt_name": "tiny_unclip.safetensors"}}}, "1", range(1))
    latent = torch.zeros(1, 4, 8, 8)
    embeds = torch.randn(2, 24, generator=torch.Generator().manual_seed(5))
    one = {"clip_vision_output": _output(embeds[:1]), "strength": 0.7, "noise_augmentation": 0.3}
    plain, single, merged = conditioning_regions([
        [torch.zeros(1, 77, 32), {}],
        [torch.zeros(1, 77, 32), {"unclip_conditioning": [one]}],
        [torch.zeros(1, 77, 32), {"unclip_conditioning": [one, dict(one, clip_vision_output=_output(embeds[1:]),
                                                                    strength=1.5, noise_augmentation=0.0)]}],
    ], model, latent, seed=42)
    assert torch.equal(plain.cond["class_labels"], torch.zeros(1, 48))
    assert torch.allclose(single.cond["class_labels"], expected_adm(embeds[0], 0.3, 42, 0.7), atol=1e-5)
    total = expected_adm(embeds[0], 0.3, 42, 0.7) + expected_adm(embeds[1], 0.0, 42, 1.5)
    # several embeddings: summed, the sum's embedding half augmented again at SD2.1-unCLIP's 0.05
    assert torch.allclose(merged.cond["class_labels"], expected_adm(total[0, :24], 0.05, 42), atol=1e-5)


def test_sdxl_revision_replaces_the_pooled_embedding(env):
    model, = _outputs(env, {"1": {"class_type": "CheckpointLoaderSimple",
                                  "inputs": {"ckpt_name": "tiny_sdxl.safetensors"}}}, "1", range(1))
    embeds = torch.randn(2, 32, generator=torch.Generator().manual_seed(6))
    pooled = torch.randn(1, 32)
    entry = {"clip_vision_output": _output(embeds), "strength": 0.75, "noise_augmentation": 0.1}
    plain, revision = conditioning_regions([
        [torch.zeros(1, 77, 64), {"pooled_output": pooled}],
        [torch.zeros(1, 77, 64), {"pooled_output": pooled, "unclip_conditioning": [entry]}],
    ], model, torch.zeros(1, 4, 8, 8), seed=9)
    assert torch.equal(plain.cond["text_embeds"], pooled)
    total = expected_adm(embeds[0], 0.1, 9, 0.75) + expected_adm(embeds[1], 0.1, 9, 0.75)
    # two images: summed and augmented again at level 0 (SDXL's merge), the embedding half kept
    assert torch.allclose(revision.cond["text_embeds"], expected_adm(total[0, :32], 0.0, 9)[:, :32], atol=1e-5)


# --- sampling ----------------------------------------------------------------------------------


@pytest.mark.slow  # several tiny-model image runs: the full suite (make test), not the fast lane
def test_unclip_strength_zero_gives_the_plain_image_and_other_strengths_change_it(env):
    plain = image_of(env, unclip_document(None))
    assert torch.equal(image_of(env, unclip_document(0.0)), plain)
    with_image = image_of(env, unclip_document(1.0))
    assert (with_image - plain).abs().max() > 1e-3
    assert torch.equal(image_of(env, unclip_document(1.0)), with_image)  # the seed fixes the augmentation noise
    noised = image_of(env, unclip_document(1.0, noise_augmentation=0.5))
    assert (noised - with_image).abs().max() > 1e-4
    other = image_of(env, unclip_document(1.0, color=0xDD8800))
    assert (other - with_image).abs().max() > 1e-4
    simple = image_of(env, sample_document("CheckpointLoaderSimple", "tiny_unclip.safetensors", "tiny_h.safetensors",
                                           None))
    assert torch.equal(simple, plain)


def test_sdxl_revision_strength_zero_gives_the_plain_image_and_other_strengths_change_it(env):
    plain = image_of(env, revision_document(None))
    assert torch.equal(image_of(env, revision_document(0.0)), plain)
    assert (image_of(env, revision_document(0.75)) - plain).abs().max() > 1e-3


@pytest.mark.parametrize("document, message", [
    (revision_document(1.0, "tiny_h.safetensors"), "SDXL revision needs image embeddings 32 wide"),
    (sample_document("unCLIPCheckpointLoader", "tiny_unclip.safetensors", "tiny_g.safetensors", 1.0),
     "takes image embeddings 24 wide"),
    (sample_document("unCLIPCheckpointLoader", "tiny_unclip_no_embedder.safetensors", None, 1.0),
     "holds no CLIP vision model"),
], ids=["revision-width", "unclip-width", "no-embedder"])
def test_mismatched_parts_fail_with_a_clear_error(env, document, message):
    if "20" in document and document["1"]["class_type"] == "unCLIPCheckpointLoader":
        document["11"]["inputs"]["clip_vision"] = ["20", 0]
    result = run_workflow(env, document)
    assert result.status == "error" and message in result.error["exception_message"]


# --- ComfyUI's revision template ---------------------------------------------------------------


def test_comfyuis_sdxl_revision_template_converts_validates_and_runs(env):
    registry, runtime = env
    document = json.loads(TEMPLATE.read_text())
    api = ui_to_api(document, registry)
    assert api["19"]["class_type"] == "unCLIPConditioning"
    assert api["19"]["inputs"]["strength"] == 0.75 and api["19"]["inputs"]["noise_augmentation"] == 0
    assert api["13"]["inputs"]["crop"] == "center" and api["13"]["inputs"]["clip_vision"] == ["39", 0]
    checked = prepare(document, registry, runtime=runtime)
    # only the files are missing here: the checkpoint, the CLIP vision model and the two images
    assert set(checked.node_errors) == {"34", "38", "39", "40"}, checked.node_errors
    for node in document["nodes"]:
        if node["type"] == "CheckpointLoaderSimple":
            node["widgets_values"] = ["tiny_sdxl.safetensors"]
        elif node["type"] == "CLIPVisionLoader":
            node["widgets_values"] = ["tiny_g.safetensors"]
        elif node["type"] == "EmptyLatentImage":
            node["widgets_values"] = [64, 64, 1]
        elif node["type"] == "KSampler":
            node["widgets_values"][2] = 3  # steps
        elif node["type"] == "LoadImage":
            name = node["widgets_values"][0]
            pixels = np.full((40, 56, 3), 60 if name.endswith("1.png") else 200, dtype=np.uint8)
            Image.fromarray(pixels).save(runtime.folders.input / name)
    result = Executor(folders=runtime.folders, runtime=runtime).execute(
        prepare(document, registry, runtime=runtime).plan)
    assert result.status == "success", result.error and result.error.get("traceback")
    assert len(list(runtime.folders.output.glob("ComfyUI_*.png"))) == 1
