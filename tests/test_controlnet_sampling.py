"""ControlNets while sampling, through the engine: the nodes on the tiny SD1 and SDXL
checkpoints with tiny generated ControlNets (nothing downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel
from PIL import Image

from graph import prepare
from nodes.controlnet.residuals import resize_hint
from tests.fixtures.model_env import model_env
from tests.fixtures.tiny_controlnets import save_ldm, tiny_controlnet
from tests.fixtures.tiny_loras import random_lora, write_kohya
from tests.test_sd_nodes import Capture

pytest_plugins = ["tests.fixtures.tiny_models"]


class Runs(Capture):
    """Runs the KSamplers of a document and gives their latents."""

    def latent(self, document, node="5"):
        checked = prepare(document, self.registry, [node], runtime=self.runtime)
        assert checked.ok, checked.response()
        self.plan = checked.plan
        result = self.executor.execute(checked.plan)
        assert result.status == "success", result.error
        return self.output(node)["samples"]


def _square(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    left, top, right, bottom = box
    pixels[top:bottom, left:right] = 255
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def env(tiny_checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("controlnet_env")
    sd1, sdxl = tiny_checkpoints.models["sd1"], tiny_checkpoints.models["sdxl"]
    nets = root / "nets"
    nets.mkdir()
    files = {
        "checkpoints": {"base.safetensors": tiny_checkpoints.sd1, "xl.safetensors": tiny_checkpoints.sdxl,
                        "inpaint.safetensors": tiny_checkpoints.sd1_inpaint, "sd2.safetensors": tiny_checkpoints.sd2_v},
        "controlnet": {
            "a.safetensors": save_ldm(tiny_controlnet(sd1.unet, seed=1), nets / "a.safetensors"),
            "b.safetensors": save_ldm(tiny_controlnet(sd1.unet, seed=2), nets / "b.safetensors"),
            "zero.safetensors": save_ldm(tiny_controlnet(sd1.unet, zero=True), nets / "zero.safetensors"),
            "xl.safetensors": save_ldm(tiny_controlnet(sdxl.unet, seed=3), nets / "xl.safetensors"),
            "sd2.safetensors": save_ldm(tiny_controlnet(tiny_checkpoints.models["sd2_v"].unet, seed=4),
                                        nets / "sd2.safetensors"),
        },
        "loras": {"l.safetensors": write_kohya(random_lora(sd1.unet, sd1.text_encoders, seed=4), nets / "l.safetensors")},
    }
    registry, runtime = model_env(root, files)
    folder = runtime.folders.input
    folder.mkdir(parents=True, exist_ok=True)
    _square((64, 64), (16, 16, 48, 40)).save(folder / "square.png")
    odd = _square((56, 40), (10, 5, 30, 35))
    odd.save(folder / "odd.png")
    hint = torch.from_numpy(np.array(odd)).float().div(255).movedim(-1, 0)[None]
    resized = resize_hint(hint, 64, 64)[0].movedim(0, -1).mul(255).round().byte().numpy()
    Image.fromarray(resized).save(folder / "odd_resized.png")
    return registry, runtime


def workflow(*applies, ckpt="base.safetensors", hint="square.png", steps=3, cfg=5.0, model=("1", 0),
             positive=("2", 0), batch=1):
    """txt2img with a chain of ControlNetApplyAdvanced nodes, each ``(net, strength, start, end)``."""
    doc = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "h": {"class_type": "LoadImage", "inputs": {"image": hint}},
    }
    pos, neg = list(positive), ["3", 0]
    for index, (net, strength, start, end) in enumerate(applies):
        doc[f"c{index}"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": net}}
        doc[f"a{index}"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": pos, "negative": neg, "control_net": [f"c{index}", 0], "image": ["h", 0],
            "strength": strength, "start_percent": start, "end_percent": end}}
        pos, neg = [f"a{index}", 0], [f"a{index}", 1]
    doc["5"] = {"class_type": "KSampler", "inputs": {
        "model": list(model), "seed": 3, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal",
        "positive": pos, "negative": neg, "latent_image": ["4", 0], "denoise": 1.0}}
    return doc


@pytest.fixture(scope="module")
def runs(env):
    return Runs(env)


@pytest.fixture(scope="module")
def base(runs):
    return runs.latent(workflow())


def test_zero_convolutions_give_exactly_the_base_image(runs, base):
    assert torch.equal(runs.latent(workflow(("zero.safetensors", 1.0, 0.0, 1.0))), base)
    guided = runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0)))
    assert (guided - base).abs().max() > 1e-3


def test_a_window_outside_the_run_gives_exactly_the_base_image(runs, base):
    assert torch.equal(runs.latent(workflow(("a.safetensors", 1.0, 1.0, 1.0))), base)
    assert torch.equal(runs.latent(workflow(("a.safetensors", 0.0, 0.0, 1.0))), base)  # strength 0: unchanged
    full = runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0)))
    late = runs.latent(workflow(("a.safetensors", 1.0, 0.5, 1.0)))
    assert not torch.equal(late, base) and not torch.equal(late, full)


@pytest.mark.slow  # several tiny-model image runs: the full suite (make test), not the fast lane
def test_a_chained_second_controlnet_changes_the_result(runs):
    one = runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0)))
    two = runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0), ("b.safetensors", 1.0, 0.0, 1.0)))
    assert (two - one).abs().max() > 1e-3
    # the second one outside its window: the first one's result exactly
    assert torch.equal(runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0), ("b.safetensors", 1.0, 1.0, 1.0))),
                       one)


def test_one_batched_controlnet_pass_per_unet_call(runs, monkeypatch):
    batches = []
    forward = ControlNetModel.forward

    def counting(self, sample, *args, **kwargs):
        batches.append(sample.shape[0])
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(ControlNetModel, "forward", counting)
    runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0), ("b.safetensors", 0.7, 0.0, 1.0), steps=2, cfg=4.5))
    assert batches == [2, 2, 2, 2]  # two steps, each: both ControlNets once, uncond and cond together


def test_each_hint_is_encoded_once_per_run_with_the_same_result(runs, monkeypatch):
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

    import nodes.controlnet.residuals as residuals

    encoded = []
    encode = ControlNetConditioningEmbedding.forward

    def counting(self, conditioning):
        encoded.append(tuple(conditioning.shape))
        return encode(self, conditioning)

    monkeypatch.setattr(ControlNetConditioningEmbedding, "forward", counting)
    doc = workflow(("a.safetensors", 1.0, 0.0, 1.0), ("b.safetensors", 0.7, 0.0, 1.0), steps=3, cfg=4.5)
    once = runs.latent(doc)
    assert encoded == [(2, 3, 64, 64)] * 2  # each ControlNet's hint once per run, not once per step
    encoded.clear()
    monkeypatch.setattr(residuals, "encoded_hint", lambda model, hint, cache, key: hint)  # diffusers' own path
    runs.executor.cache.clear()  # run it again rather than give the cached latent
    every_step = runs.latent(doc)
    assert encoded == [(2, 3, 64, 64)] * 6
    assert torch.equal(once, every_step)


@pytest.mark.slow  # several tiny-model image runs: the full suite (make test), not the fast lane
def test_old_apply_node_gives_the_negative_the_same_controlnet(runs):
    doc = workflow()
    doc["c"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "a.safetensors"}}
    doc["old"] = {"class_type": "ControlNetApply", "inputs": {
        "conditioning": ["2", 0], "control_net": ["c", 0], "image": ["h", 0], "strength": 0.8}}
    doc["5"]["inputs"]["positive"] = ["old", 0]
    assert torch.equal(runs.latent(doc), runs.latent(workflow(("a.safetensors", 0.8, 0.0, 1.0))))


def test_a_hint_of_another_size_is_resized(runs):
    odd = runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0), hint="odd.png"))
    assert torch.equal(odd, runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0), hint="odd_resized.png")))
    assert not torch.equal(odd, runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0))))


def test_a_hint_that_is_not_an_image_is_a_validation_error(runs):
    doc = workflow(("a.safetensors", 1.0, 0.0, 1.0))
    doc["a0"]["inputs"]["image"] = ["4", 0]  # a LATENT
    checked = prepare(doc, runs.registry, ["5"], runtime=runs.runtime)
    assert not checked.ok
    errors = checked.node_errors["a0"]["errors"]
    assert errors and "image" in str(errors)


@pytest.mark.slow  # several tiny-model image runs: the full suite (make test), not the fast lane
def test_combines_with_lora_area_conditioning_and_inpainting(runs):
    lora = ("l", 0)
    doc = workflow(model=lora)
    doc["l"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": "l.safetensors",
                                                      "strength_model": 1.0, "strength_clip": 1.0}}
    plain = runs.latent(doc)
    guided_doc = workflow(("a.safetensors", 1.0, 0.0, 1.0), model=lora)
    guided_doc["l"] = doc["l"]
    assert (runs.latent(guided_doc) - plain).abs().max() > 1e-3

    area = {"class_type": "ConditioningSetAreaPercentage", "inputs": {
        "conditioning": ["2", 0], "width": 0.5, "height": 0.5, "x": 0.25, "y": 0.125, "strength": 1.0}}
    doc = workflow(positive=("ar", 0))
    doc["ar"] = area
    guided_doc = workflow(("a.safetensors", 1.0, 0.0, 1.0), positive=("ar", 0))
    guided_doc["ar"] = area
    assert (runs.latent(guided_doc) - runs.latent(doc)).abs().max() > 1e-3

    plain = runs.latent(workflow(ckpt="inpaint.safetensors"))
    assert (runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0), ckpt="inpaint.safetensors")) - plain).abs().max() > 1e-3


def test_sd2_controlnet_guides_an_sd2_model(runs):
    base = runs.latent(workflow(ckpt="sd2.safetensors"))
    assert (runs.latent(workflow(("sd2.safetensors", 1.0, 0.0, 1.0), ckpt="sd2.safetensors")) - base).abs().max() > 1e-3


def test_a_batch_of_hints_goes_one_to_each_latent(runs):
    """Latent batch 2 with hints [square, odd]: each image follows its own hint (its
    cond and uncond rows both), as if sampled alone with that hint."""
    doc = workflow(("a.safetensors", 1.0, 0.0, 1.0), batch=2)
    doc["h2"] = {"class_type": "LoadImage", "inputs": {"image": "odd_resized.png"}}
    doc["hb"] = {"class_type": "ImageBatch", "inputs": {"image1": ["h", 0], "image2": ["h2", 0]}}
    doc["a0"]["inputs"]["image"] = ["hb", 0]
    both = runs.latent(doc)
    first = runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0)))
    assert torch.allclose(both[:1], first, atol=1e-3, rtol=1e-4)
    other = runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0), hint="odd_resized.png"))
    assert not torch.allclose(both[:1], other, atol=1e-3)


def test_hint_broadcast_follows_comfyui():
    from nodes.controlnet.residuals import broadcast_hint

    hints = torch.arange(3.0).view(3, 1, 1, 1)
    assert broadcast_hint(hints, 4, 2).flatten().tolist() == [0.0, 1.0, 0.0, 1.0]  # 2 entries of 2 rows
    assert broadcast_hint(hints, 6, 2).flatten().tolist() == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0]
    assert broadcast_hint(hints[:2], 6, 2).flatten().tolist() == [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert broadcast_hint(hints[:1], 6, 2).shape[0] == 1  # broadcasts


@pytest.mark.slow  # several tiny-model image runs: the full suite (make test), not the fast lane
def test_sdxl_controlnet_guides_an_sdxl_model_only(runs):
    base = runs.latent(workflow(ckpt="xl.safetensors"))
    assert (runs.latent(workflow(("xl.safetensors", 1.0, 0.0, 1.0), ckpt="xl.safetensors")) - base).abs().max() > 1e-3
    doc = workflow(("xl.safetensors", 1.0, 0.0, 1.0))
    checked = prepare(doc, runs.registry, ["5"], runtime=runs.runtime)
    result = runs.executor.execute(checked.plan)
    assert result.status == "error" and "cannot guide a sd1 model" in str(result.error)


def test_rows_without_a_controlnet_get_zero_residuals(tiny_checkpoints):
    """One UNet batch whose first entry has no ControlNet and whose second has one: the
    second's residuals are what the ControlNet gives those rows alone, the first's are 0."""
    from types import SimpleNamespace

    from nodes.controlnet.handle import ControlLink, ControlNetHandle
    from nodes.controlnet.residuals import ControlRows
    from nodes.sampling import sd_schedule

    unet = tiny_checkpoints.models["sd1"].unet
    net = ControlNetHandle(tiny_controlnet(unet, seed=1), "sd1", torch.device("cpu"), torch.float32,
                           tiny_checkpoints.sd1)
    model = SimpleNamespace(family="sd1", schedule=sd_schedule(), dtype=torch.float32)
    link = ControlLink(net, torch.rand(1, 3, 64, 64), 0.7)
    g = torch.Generator().manual_seed(0)
    x, t, context = torch.randn(4, 4, 8, 8, generator=g), torch.full((4,), 300.0), torch.randn(4, 7, 32, generator=g)
    rows = ControlRows.join([ControlRows.of_entry({}), ControlRows.of_entry({"control": link})], batch=2)
    got = rows.at(5.0, {}).unet_kwargs(model, x, t, context)
    alone = ControlRows.join([ControlRows.of_entry({"control": link})], batch=2).at(5.0, {})
    expected = alone.unet_kwargs(model, x[2:], t[2:], context[2:])
    for mine, theirs in zip(got["down_block_additional_residuals"], expected["down_block_additional_residuals"],
                            strict=True):
        assert torch.equal(mine[:2], torch.zeros_like(mine[:2])) and torch.allclose(mine[2:], theirs, atol=1e-6)
    assert torch.allclose(got["mid_block_additional_residual"][2:], expected["mid_block_additional_residual"], atol=1e-6)
    assert rows.at(5.0, {}).segments == ((None, 1, 2), (link, 1, 2))


def test_applied_conditioning_is_dropped_with_the_models(runs):
    """POST /free's unload_models drops the models pool: the apply node's conditioning (which
    holds the ControlNet) goes with the loader's output."""
    from graph.cache import pool_of

    runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0)))
    positive, negative = (runs.output("a0", slot) for slot in (0, 1))
    assert pool_of([[positive], [negative]]) == "models" and pool_of([[runs.output("c0")]]) == "models"
    assert positive[0][1]["control"] is negative[0][1]["control"]  # one link: run together


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_narrow_dtypes_run_controlnets_and_adapters(tiny_checkpoints, family):
    """A bf16 UNet with a bf16 ControlNet (and, on SD1, a T2I-Adapter chained after it), as
    GPU users run them: the guided step runs and gives finite values."""
    import copy
    from pathlib import Path

    from nodes.controlnet.handle import ControlLink, ControlNetHandle
    from nodes.sampling import sd_schedule
    from nodes.sd.guiders import CFGGuider
    from nodes.sd.handles import ModelHandle
    from tests.fixtures.tiny_controlnets import tiny_adapter

    source = tiny_checkpoints.models[family].unet
    dtype, cpu = torch.bfloat16, torch.device("cpu")
    model = ModelHandle(unet=copy.deepcopy(source).to(dtype), family=family, prediction="eps", schedule=sd_schedule(),
                        latent_scale=0.18215, in_channels=4, device=cpu, dtype=dtype, source=Path("m"))
    link = ControlLink(ControlNetHandle(tiny_controlnet(source, seed=1).to(dtype), family, cpu, dtype, Path("n")),
                       torch.rand(1, 3, 64, 64), 1.0)
    if family == "sd1":
        adapter = ControlNetHandle(tiny_adapter([32, 64], seed=2).to(dtype), "sd1", cpu, dtype, Path("a"),
                                   kind="t2i_adapter")
        link = ControlLink(adapter, torch.rand(1, 3, 64, 64), 0.8, previous=link)
    extras = {"control": link}
    if family == "sdxl":
        extras["pooled_output"] = torch.randn(1, 32)
    context = torch.randn(1, 77, source.config.cross_attention_dim)
    denoiser = CFGGuider(model, [[context, extras]], [[context, dict(extras)]], 5.0).denoiser(
        torch.zeros(1, 4, 8, 8), None)
    out = denoiser(torch.randn(1, 4, 8, 8), torch.tensor([3.0]))
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
