"""CLIP vision loading and encoding, and the CLIP vision / unCLIP nodes' declarations.

Tiny encoders (``tests.fixtures.tiny_clip_vision``) are written in ComfyUI's two key
layouts and must load back to the model they were written from. ``COMFY`` writes out, as
facts read from ComfyUI's ``nodes.py`` (CLIPVisionLoader, CLIPVisionEncode,
unCLIPConditioning, unCLIPCheckpointLoader, StyleModelLoader, StyleModelApply), each node's
inputs in order and outputs; the UI documents converted here are built from those facts,
not from our declarations. The config facts of the full-size encoders are those of
ComfyUI's ``clip_vision_config_*.json``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from graph import Folders, build_registry, prepare, ui_to_api
from nodes.models.clip_vision_load import VisionLayout, find_vision_layout, load_clip_vision, vision_config
from nodes.models.errors import UnknownCheckpointError
from nodes.models.folders import ModelFolders
from nodes.sd.clip_vision_encode import ClipVisionHandle, clip_preprocess, encode_image
from nodes.sd.runtime import DeviceSettings, Runtime
from tests.fixtures.model_env import run_successfully
from tests.fixtures.tiny_clip_vision import IMAGE_SIZE, hf_state, tiny_vision_model, write_vision
from tests.utility_support import CAPTURED, Capture

pytest_plugins = ["tests.fixtures.tiny_models"]

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)  # ComfyUI's clip_preprocess
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

# node: (inputs as (name, type or combo options, default, min, max, step), outputs as (type, name));
# a combo given as None lists the installation's model files.
COMFY: dict[str, tuple[list[tuple[Any, ...]], list[tuple[str, str]]]] = {
    "CLIPVisionLoader": ([("clip_name", None, None, None, None, None)], [("CLIP_VISION", "CLIP_VISION")]),
    "CLIPVisionEncode": ([("clip_vision", "CLIP_VISION", None, None, None, None),
                          ("image", "IMAGE", None, None, None, None),
                          ("crop", ["center", "none"], None, None, None, None)],
                         [("CLIP_VISION_OUTPUT", "CLIP_VISION_OUTPUT")]),
    "unCLIPConditioning": ([("conditioning", "CONDITIONING", None, None, None, None),
                            ("clip_vision_output", "CLIP_VISION_OUTPUT", None, None, None, None),
                            ("strength", "FLOAT", 1.0, -10.0, 10.0, 0.01),
                            ("noise_augmentation", "FLOAT", 0.0, 0.0, 1.0, 0.01)],
                           [("CONDITIONING", "CONDITIONING")]),
    "unCLIPCheckpointLoader": ([("ckpt_name", None, None, None, None, None)],
                               [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE"), ("CLIP_VISION", "CLIP_VISION")]),
    "StyleModelLoader": ([("style_model_name", None, None, None, None, None)], [("STYLE_MODEL", "STYLE_MODEL")]),
    "StyleModelApply": ([("conditioning", "CONDITIONING", None, None, None, None),
                         ("style_model", "STYLE_MODEL", None, None, None, None),
                         ("clip_vision_output", "CLIP_VISION_OUTPUT", None, None, None, None),
                         ("strength", "FLOAT", 1.0, 0.0, 10.0, 0.001),
                         ("strength_type", ["multiply", "attn_bias"], None, None, None, None)],
                        [("CONDITIONING", "CONDITIONING")]),
}
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}


@pytest.fixture(scope="module")
def vision():
    return tiny_vision_model(seed=11, projection_dim=24)


@pytest.fixture(scope="module")
def env(tmp_path_factory, vision):
    root = tmp_path_factory.mktemp("clip_vision")
    folder = root / "models" / "clip_vision"
    folder.mkdir(parents=True)
    write_vision(folder / "tiny_hf.safetensors", vision, "hf")
    write_vision(folder / "tiny_open_clip.safetensors", vision, "open_clip")
    (root / "models" / "checkpoints").mkdir()
    runtime = Runtime(folders=Folders.under(root), models=ModelFolders(root / "models"),
                      settings=DeviceSettings(device="cpu", dtype=torch.float32))
    registry = build_registry("nodes", None)
    registry.register(Capture)
    return registry, runtime


def encode_document(clip_name: str, crop: str = "center", color: int = 0x336699, width: int = 40,
                    batch: int = 2) -> dict:
    return {
        "1": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": clip_name}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": width, "height": 32, "batch_size": batch,
                                                     "color": color}},
        "3": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["1", 0], "image": ["2", 0], "crop": crop}},
        "4": {"class_type": "TestCapture", "inputs": {"value": ["3", 0], "key": "clip_vision_output"}},
    }


# --- loading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["hf", "open_clip"])
def test_each_layout_loads_back_to_the_model_it_was_written_from(tmp_path, vision, layout):
    path = write_vision(tmp_path / "v.safetensors", vision, layout)
    loaded = load_clip_vision(path)
    assert loaded.image_size == IMAGE_SIZE
    pixels = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    ours = loaded.model(pixel_values=pixels, output_hidden_states=True)
    theirs = vision(pixel_values=pixels, output_hidden_states=True)
    assert torch.equal(ours.image_embeds, theirs.image_embeds)
    assert torch.equal(ours.hidden_states[-2], theirs.hidden_states[-2])
    config = loaded.model.config
    assert (config.num_hidden_layers, config.projection_dim, config.hidden_act) == (3, 24, "gelu")


def test_a_whole_clip_model_file_loads_its_vision_tower(tmp_path, vision):
    """A transformers CLIPModel file also holds the text tower; ComfyUI reads only the vision keys."""
    state = hf_state(vision) | {"text_model.embeddings.token_embedding.weight": torch.zeros(10, 8),
                                "text_projection.weight": torch.zeros(8, 8), "logit_scale": torch.tensor(1.0)}
    save_file(state, str(tmp_path / "clip.safetensors"))
    loaded = load_clip_vision(tmp_path / "clip.safetensors")
    pixels = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.equal(loaded.model(pixel_values=pixels).image_embeds, vision(pixel_values=pixels).image_embeds)


def _vit_shapes(width: int, layers: int, mlp: int, projection: int, positions: int = 257) -> dict:
    shapes = {"vision_model.embeddings.class_embedding": (width,),
              "vision_model.embeddings.patch_embedding.weight": (width, 3, 14, 14),
              "vision_model.embeddings.position_embedding.weight": (positions, width),
              "visual_projection.weight": (projection, width)}
    for n in range(layers):
        shapes[f"vision_model.encoder.layers.{n}.layer_norm1.weight"] = (width,)
        shapes[f"vision_model.encoder.layers.{n}.mlp.fc1.weight"] = (mlp, width)
    return shapes


@pytest.mark.parametrize("shapes, comfy", [
    # ComfyUI's clip_vision_config_vitl.json, _h.json, _g.json and _vitl_336.json
    (_vit_shapes(1024, 24, 4096, 768), {"hidden_act": "quick_gelu", "image_size": 224, "projection_dim": 768}),
    (_vit_shapes(1280, 32, 5120, 1024), {"hidden_act": "gelu", "image_size": 224, "projection_dim": 1024}),
    (_vit_shapes(1664, 48, 8192, 1280), {"hidden_act": "gelu", "image_size": 224, "projection_dim": 1280}),
    (_vit_shapes(1024, 24, 4096, 768, positions=577), {"hidden_act": "quick_gelu", "image_size": 336,
                                                       "projection_dim": 768}),
], ids=["vit-l", "vit-h", "vit-bigg", "vit-l-336"])
def test_full_size_configs_match_comfyuis(shapes, comfy):
    config = vision_config(shapes, VisionLayout("", "hf"))
    width = shapes["vision_model.embeddings.class_embedding"][0]
    assert config["num_attention_heads"] == 16 and config["patch_size"] == 14 and config["layer_norm_eps"] == 1e-5
    assert config["hidden_size"] == width
    assert {k: config[k] for k in comfy} == comfy


def test_an_unclip_checkpoints_embedder_is_found_under_its_prefix():
    shapes = {"embedder.model.visual.class_embedding": (8,), "embedder.model.visual.conv1.weight": (8, 3, 14, 14)}
    assert find_vision_layout(shapes, "embedder.model.") == VisionLayout("embedder.model.visual.", "open_clip")
    assert find_vision_layout(shapes) is None


def test_files_that_are_no_clip_vision_model_are_refused_by_what_they_are(tmp_path, tiny_checkpoints):
    with pytest.raises(UnknownCheckpointError, match="not a CLIP vision model"):
        load_clip_vision(tiny_checkpoints.sd1)
    siglip = {"vision_model.embeddings.patch_embedding.weight": torch.zeros(4, 3, 14, 14),
              "vision_model.embeddings.position_embedding.weight": torch.zeros(4, 4)}
    save_file(siglip, str(tmp_path / "siglip.safetensors"))
    with pytest.raises(UnknownCheckpointError, match="SigLIP"):
        load_clip_vision(tmp_path / "siglip.safetensors")


# --- preprocessing and encoding --------------------------------------------------------------------


def _handle(vision) -> ClipVisionHandle:
    return ClipVisionHandle(vision, torch.device("cpu"), torch.float32, IMAGE_SIZE,
                            (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def test_an_image_of_the_models_size_is_only_rounded_and_normalised():
    image = torch.rand(2, IMAGE_SIZE, IMAGE_SIZE, 3, generator=torch.Generator().manual_seed(1))
    pixels = clip_preprocess(image, IMAGE_SIZE, MEAN.flatten().tolist(), STD.flatten().tolist())
    expected = ((image.movedim(-1, 1) * 255).round() / 255 - MEAN) / STD
    assert torch.allclose(pixels, expected, atol=1e-6)


def test_center_crop_takes_the_middle_and_none_squashes(vision):
    handle = _handle(vision)
    wide = torch.rand(1, IMAGE_SIZE, IMAGE_SIZE + 12, 3, generator=torch.Generator().manual_seed(2))
    middle = wide[:, :, 6:6 + IMAGE_SIZE]
    centre = encode_image(handle, wide, crop=True)
    assert torch.allclose(centre.image_embeds, encode_image(handle, middle, crop=True).image_embeds, atol=1e-5)
    squashed = encode_image(handle, wide, crop=False)
    assert not torch.allclose(squashed.image_embeds, centre.image_embeds, atol=1e-3)
    assert clip_preprocess(torch.rand(1, 50, 20, 4), IMAGE_SIZE, (0, 0, 0), (1, 1, 1)).shape == (1, 3, 28, 28)


@pytest.mark.parametrize("clip_name", ["tiny_hf.safetensors", "tiny_open_clip.safetensors"])
def test_clip_vision_encode_gives_comfyuis_output_fields(env, vision, clip_name):
    run_successfully(env, encode_document(clip_name))
    output = CAPTURED["clip_vision_output"][-1]
    tokens = (IMAGE_SIZE // 14) ** 2 + 1
    assert output.image_embeds.shape == (2, 24) and output["image_embeds"] is output.image_embeds
    assert output.last_hidden_state.shape == (2, tokens, 32)
    assert output.penultimate_hidden_states.shape == (2, tokens, 32)
    assert output.mm_projected is None
    # the same as the original model on ComfyUI's preprocessing of the same image
    image = torch.ones(1, 32, 40, 3) * torch.tensor([0x33, 0x66, 0x99]) / 255
    reference = vision(pixel_values=clip_preprocess(image, IMAGE_SIZE, MEAN.flatten().tolist(),
                                                     STD.flatten().tolist()), output_hidden_states=True)
    assert torch.allclose(output.image_embeds[1], reference.image_embeds[0], atol=1e-5)
    assert torch.allclose(output.penultimate_hidden_states[0], reference.hidden_states[-2][0], atol=1e-5)
    assert torch.allclose(output.last_hidden_state[0], reference.last_hidden_state[0], atol=1e-5)


def test_another_image_gives_another_embedding(env):
    run_successfully(env, encode_document("tiny_hf.safetensors", color=0x336699, batch=1))
    run_successfully(env, encode_document("tiny_hf.safetensors", color=0xEE2211, batch=1))
    first, second = CAPTURED["clip_vision_output"][-2:]
    assert not torch.allclose(first.image_embeds, second.image_embeds, atol=1e-4)


def test_clip_vision_is_a_model_handle(env):
    """CLIP_VISION belongs to the cache's "models" pool (POST /free unloads it) and names the
    module placement moves."""
    from nodes.sd.runtime import ModelHandle

    document = encode_document("tiny_hf.safetensors", batch=1)
    document["5"] = {"class_type": "TestCapture", "inputs": {"value": ["1", 0], "key": "clip_vision"}}
    run_successfully(env, document)
    handle = CAPTURED["clip_vision"][-1]
    assert isinstance(handle, ModelHandle) and handle.cache_pool == "models"
    assert handle.modules() == (handle.model,) and handle.size_bytes() > 0


def test_a_missing_clip_vision_file_is_a_validation_error(env):
    registry, runtime = env
    checked = prepare(encode_document("absent.safetensors"), registry, runtime=runtime)
    assert not checked.ok and "1" in checked.node_errors


# --- declarations ------------------------------------------------------------------------------


@pytest.mark.parametrize("node", sorted(COMFY))
def test_object_info_has_comfyuis_inputs_and_outputs(env, node):
    registry, runtime = env
    info = registry.object_info(runtime)[node]
    inputs, outputs = COMFY[node]
    assert info["input_order"]["required"] == [name for name, *_ in inputs]
    for name, kind, default, low, high, step in inputs:
        spec_type, options = (info["input"]["required"][name] + [{}])[:2]
        if kind is None:
            assert isinstance(spec_type, list), name
        else:
            assert spec_type == kind, name
        if default is not None:
            assert (options.get("default"), options.get("min"), options.get("max"), options.get("step")) == \
                (default, low, high, step), name
    assert list(zip(info["output"], info["output_name"], strict=True)) == outputs


def _ui_node(node: str, values: dict[str, Any]) -> dict[str, Any]:
    """The node as ComfyUI's editor saves it, laid out from the COMFY facts."""
    inputs, outputs = COMFY[node]
    widgets = [values[name] for name, kind, *_ in inputs if kind is None or isinstance(kind, list) or kind in WIDGETS]
    links = [{"name": name, "type": kind, "link": None} for name, kind, *_ in inputs
             if not (kind is None or isinstance(kind, list) or kind in WIDGETS)]
    return {"id": 1, "type": node, "pos": [0, 0], "size": [300, 100], "flags": {}, "order": 0, "mode": 0,
            "inputs": links, "outputs": [{"name": n, "type": t, "links": []} for t, n in outputs],
            "properties": {"Node name for S&R": node}, "widgets_values": widgets}


@pytest.mark.parametrize("node, values", [
    ("CLIPVisionLoader", {"clip_name": "tiny_open_clip.safetensors"}),
    ("CLIPVisionEncode", {"crop": "none"}),
    ("unCLIPConditioning", {"strength": -2.5, "noise_augmentation": 0.35}),
    ("unCLIPCheckpointLoader", {"ckpt_name": "absent.safetensors"}),
    ("StyleModelLoader", {"style_model_name": "absent.safetensors"}),
    ("StyleModelApply", {"strength": 2.5, "strength_type": "attn_bias"}),
])
def test_a_node_saved_by_comfyui_converts_and_validates(env, node, values):
    registry, runtime = env
    document = {"nodes": [_ui_node(node, values)], "links": [], "version": 0.4}
    assert ui_to_api(document, registry)["1"]["inputs"] == values
    checked = prepare(document, registry, runtime=runtime)
    errors = checked.node_errors.get("1", {}).get("errors", []) if not checked.ok else []
    linked = {name for name, kind, *_ in COMFY[node][0] if not (kind is None or isinstance(kind, list)
                                                                   or kind in WIDGETS)}
    complaints = {e["extra_info"].get("input_name") for e in errors}
    # unconnected links, and the absent file's name, are the only complaints
    assert complaints <= linked | {"ckpt_name", "style_model_name"}, errors
