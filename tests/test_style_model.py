"""T2I-Adapter style models: StyleModelLoader and StyleModelApply on the tiny SD1 checkpoint.

A tiny style adapter is written as tensors in the released file's key layout (ComfyUI's
``StyleAdapter`` names); its output is checked against the adapter's computation written
out here with plain tensor operations (pre-norm blocks, 8-head attention from the fused
``in_proj``, QuickGELU MLP, the last ``num_token`` tokens normed and projected).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file

from graph import Folders, build_registry
from nodes.models.errors import UnknownCheckpointError
from nodes.models.folders import ModelFolders
from nodes.models.style_model_load import load_style_model
from nodes.sd.clip_vision_encode import ClipVisionOutput
from nodes.sd.runtime import DeviceSettings, ModelHandle, Runtime
from tests.fixtures.model_env import run_successfully
from tests.fixtures.tiny_clip_vision import tiny_vision_model, write_vision
from tests.utility_support import CAPTURED, Capture

pytest_plugins = ["tests.fixtures.tiny_models"]
WIDTH, CONTEXT, TOKENS, LAYERS = 32, 32, 4, 2


def style_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the t2iadapter_style file's layout."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    out = {"style_embedding": rand(1, TOKENS, WIDTH, scale=1.0), "proj": rand(WIDTH, CONTEXT),
           "ln_pre.weight": 1 + rand(WIDTH), "ln_pre.bias": rand(WIDTH),
           "ln_post.weight": 1 + rand(WIDTH), "ln_post.bias": rand(WIDTH)}
    for n in range(LAYERS):
        p = f"transformer_layes.{n}."
        out |= {p + "attn.in_proj_weight": rand(3 * WIDTH, WIDTH), p + "attn.in_proj_bias": rand(3 * WIDTH),
                p + "attn.out_proj.weight": rand(WIDTH, WIDTH), p + "attn.out_proj.bias": rand(WIDTH),
                p + "ln_1.weight": 1 + rand(WIDTH), p + "ln_1.bias": rand(WIDTH),
                p + "ln_2.weight": 1 + rand(WIDTH), p + "ln_2.bias": rand(WIDTH),
                p + "mlp.c_fc.weight": rand(4 * WIDTH, WIDTH), p + "mlp.c_fc.bias": rand(4 * WIDTH),
                p + "mlp.c_proj.weight": rand(WIDTH, 4 * WIDTH), p + "mlp.c_proj.bias": rand(WIDTH)}
    return out


def reference(t: dict[str, torch.Tensor], x: torch.Tensor, heads: int = 8) -> torch.Tensor:
    """The style adapter's output [N, TOKENS, CONTEXT] for tokens ``x`` [N, T, WIDTH]."""
    def norm(v, name):
        return torch.nn.functional.layer_norm(v, (WIDTH,), t[name + ".weight"], t[name + ".bias"])

    x = torch.cat([x, t["style_embedding"].expand(x.shape[0], -1, -1)], dim=1)
    x = norm(x, "ln_pre")
    n, length, _ = x.shape
    for layer in range(LAYERS):
        p = f"transformer_layes.{layer}."
        h = norm(x, p + "ln_1")
        q, k, v = (h @ t[p + "attn.in_proj_weight"].T + t[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (z.reshape(n, length, heads, -1).transpose(1, 2) for z in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / (WIDTH // heads) ** 0.5, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(n, length, WIDTH)
        x = x + attended @ t[p + "attn.out_proj.weight"].T + t[p + "attn.out_proj.bias"]
        h = norm(x, p + "ln_2") @ t[p + "mlp.c_fc.weight"].T + t[p + "mlp.c_fc.bias"]
        x = x + (h * torch.sigmoid(1.702 * h)) @ t[p + "mlp.c_proj.weight"].T + t[p + "mlp.c_proj.bias"]
    return norm(x[:, -TOKENS:], "ln_post") @ t["proj"]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_checkpoints):
    root = tmp_path_factory.mktemp("style_model")
    for kind in ("checkpoints", "clip_vision", "style_models"):
        (root / "models" / kind).mkdir(parents=True)
    shutil.copy(tiny_checkpoints.sd1, root / "models" / "checkpoints" / "tiny_sd1.safetensors")
    write_vision(root / "models" / "clip_vision" / "tiny.safetensors", tiny_vision_model(seed=31), "hf")
    save_file(style_tensors(), str(root / "models" / "style_models" / "tiny_style.safetensors"))
    runtime = Runtime(folders=Folders.under(root), models=ModelFolders(root / "models"),
                      settings=DeviceSettings(device="cpu", dtype=torch.float32))
    registry = build_registry("nodes", None)
    registry.register(Capture)
    return registry, runtime


def styled_document(strength: float | None, strength_type: str = "multiply", batch: int = 1) -> dict:
    """txt2img on tiny SD1; with ``strength`` not None the positive goes through StyleModelApply."""
    doc = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 2, "steps": 3, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "TestCapture", "inputs": {"value": ["6", 0], "key": "image"}},
    }
    if strength is not None:
        doc |= {
            "10": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "tiny.safetensors"}},
            "11": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 32, "batch_size": batch,
                                                          "color": 0x8844CC}},
            "12": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["10", 0], "image": ["11", 0],
                                                                "crop": "center"}},
            "13": {"class_type": "StyleModelLoader", "inputs": {"style_model_name": "tiny_style.safetensors"}},
            "14": {"class_type": "StyleModelApply", "inputs": {
                "conditioning": ["2", 0], "style_model": ["13", 0], "clip_vision_output": ["12", 0],
                "strength": strength, "strength_type": strength_type}},
            "15": {"class_type": "TestCapture", "inputs": {"value": ["14", 0], "key": "styled"}},
            "16": {"class_type": "TestCapture", "inputs": {"value": ["12", 0], "key": "vision"}},
        }
        doc["5"]["inputs"]["positive"] = ["14", 0]
    return doc


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_the_adapter_computes_the_style_tokens(tmp_path, suffix):
    tensors = style_tensors(seed=3)
    path = tmp_path / f"style{suffix}"
    if suffix == ".pth":
        torch.save(tensors, path)
    else:
        save_file(tensors, str(path))
    handle = load_style_model(path)
    assert isinstance(handle, ModelHandle) and handle.cache_pool == "models" and handle.size_bytes() > 0
    tokens = torch.randn(2, 5, WIDTH, generator=torch.Generator().manual_seed(4))
    output = ClipVisionOutput(torch.zeros(2, 8), tokens, tokens)
    assert torch.allclose(handle.get_cond(output), reference(tensors, tokens), atol=1e-5)


def test_other_files_are_refused_by_what_they_are(tmp_path, tiny_checkpoints):
    save_file({"redux_down.weight": torch.zeros(4, 4), "redux_up.weight": torch.zeros(4, 4)},
              str(tmp_path / "redux.safetensors"))
    with pytest.raises(UnknownCheckpointError, match="Flux Redux"):
        load_style_model(tmp_path / "redux.safetensors")
    with pytest.raises(UnknownCheckpointError, match="not a T2I-Adapter style model"):
        load_style_model(tiny_checkpoints.vae)


@pytest.mark.slow  # several tiny-model image runs: the full suite (make test), not the fast lane
def test_style_tokens_are_appended_to_the_prompt_and_change_the_image(env):
    run_successfully(env, styled_document(None))
    plain = CAPTURED["image"][-1]
    run_successfully(env, styled_document(1.0, batch=2))
    styled, vision = CAPTURED["styled"][-1], CAPTURED["vision"][-1]
    text, extras = styled[0]
    assert text.shape == (1, 77 + 2 * TOKENS, CONTEXT)
    expected = reference(style_tensors(), vision.last_hidden_state).flatten(0, 1)
    assert torch.allclose(text[0, 77:], expected, atol=1e-5)
    assert (CAPTURED["image"][-1] - plain).abs().max() > 1e-3
    run_successfully(env, styled_document(0.5, batch=2))
    assert torch.allclose(CAPTURED["styled"][-1][0][0][0, 77:], 0.5 * expected, atol=1e-5)
    assert torch.equal(CAPTURED["styled"][-1][0][0][0, :77], text[0, :77])
    run_successfully(env, styled_document(0.5, "attn_bias", batch=2))  # unscaled: SD models ignore the bias in ComfyUI
    assert torch.allclose(CAPTURED["styled"][-1][0][0][0, 77:], expected, atol=1e-5)
