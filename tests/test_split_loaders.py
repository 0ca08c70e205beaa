"""UNETLoader, CLIPLoader and DualCLIPLoader on split files written from the tiny checkpoints.

The UNet, the text encoder(s) and the VAE of the tiny SD1 and SDXL checkpoints are written
as separate files, in ComfyUI's key layouts (bare LDM UNet keys, transformers ``text_model.*``
text encoders as ComfyUI's CLIPSave writes them, OpenCLIP keys for SDXL's bigG) and in
diffusers/transformers layouts (``save_pretrained`` folders with their ``config.json``); the
split loaders must give exactly the image CheckpointLoaderSimple gives on the combined file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from graph import Executor, prepare
from nodes.models.detect import CONFIG_METADATA_KEY
from nodes.models.errors import UnknownCheckpointError
from nodes.models.keymap import scatter
from nodes.models.keymap_clip import open_clip_key_map
from nodes.models.keymap_unet import unet_key_map
from nodes.models.keymap_vae import vae_key_map
from nodes.models.split import detect_text_encoder, detect_unet, load_text_encoders, load_unet_file
from tests.fixtures.model_env import model_env
from tests.fixtures.tiny_loras import random_lora, write_kohya
from tests.utility_support import CAPTURED, Capture

pytest_plugins = ["tests.fixtures.tiny_models"]


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in module.state_dict().items()}


def _config(module) -> dict:
    return {k: v for k, v in dict(module.config).items() if not k.startswith("_")}


def _encoder_config(encoder) -> dict:
    return encoder.config.to_diff_dict() | {"architectures": [type(encoder).__name__]}


def write_comfy_unet(path: Path, unet) -> Path:
    """Bare LDM keys (``input_blocks.*``...), as ComfyUI saves a diffusion model."""
    state = _state(unet)
    meta = {CONFIG_METADATA_KEY: json.dumps({"unet": _config(unet)})}
    save_file(scatter(unet_key_map(state, unet.config), state), str(path), metadata=meta)
    return path


def write_comfy_text_encoder(path: Path, encoder) -> Path:
    """transformers keys under ``text_model.`` (``text_projection.weight`` beside it), as
    ComfyUI's CLIPSave writes clip_l / clip_g files."""
    state = {(k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k): v
             for k, v in _state(encoder).items()}
    meta = {CONFIG_METADATA_KEY: json.dumps({"text_encoders": [_encoder_config(encoder)]})}
    save_file(state, str(path), metadata=meta)
    return path


def write_open_clip_text_encoder(path: Path, encoder, prefix: str = "") -> Path:
    """OpenCLIP keys (``transformer.resblocks.N``, fused q/k/v, ``text_projection`` [D, P])."""
    state = _state(encoder)
    tensors = {prefix + k: v for k, v in scatter(open_clip_key_map(state), state).items()}
    meta = {CONFIG_METADATA_KEY: json.dumps({"text_encoders": [_encoder_config(encoder)]})}
    save_file(tensors, str(path), metadata=meta)
    return path


def write_comfy_vae(path: Path, vae) -> Path:
    state = _state(vae)
    meta = {CONFIG_METADATA_KEY: json.dumps({"vae": _config(vae)})}
    save_file(scatter(vae_key_map(state, vae.config), state), str(path), metadata=meta)
    return path


@pytest.fixture(scope="module")
def split_files(tiny_checkpoints, tmp_path_factory):
    """``models/<kind>/<name>`` -> source path, for model_env; diffusers folders are copied whole."""
    out = tmp_path_factory.mktemp("split_files")
    sd1, sdxl = tiny_checkpoints.models["sd1"], tiny_checkpoints.models["sdxl"]
    sd2 = tiny_checkpoints.models["sd2_v"]
    files = {
        "checkpoints": {"sd1.safetensors": tiny_checkpoints.sd1, "sdxl.safetensors": tiny_checkpoints.sdxl},
        "diffusion_models": {
            "sd1_unet.safetensors": write_comfy_unet(out / "sd1_unet.safetensors", sd1.unet),
            "sdxl_unet.safetensors": write_comfy_unet(out / "sdxl_unet.safetensors", sdxl.unet),
            "sd2_unet.safetensors": write_comfy_unet(out / "sd2_unet.safetensors", sd2.unet),
        },
        "text_encoders": {
            "sd1_clip_l.safetensors": write_comfy_text_encoder(out / "sd1_clip_l.safetensors", sd1.text_encoders[0]),
            "sdxl_clip_l.safetensors": write_comfy_text_encoder(out / "sdxl_clip_l.safetensors",
                                                                sdxl.text_encoders[0]),
            "sdxl_clip_g.safetensors": write_comfy_text_encoder(out / "sdxl_clip_g.safetensors",
                                                                sdxl.text_encoders[1]),
            "sdxl_clip_g_open_clip.safetensors": write_open_clip_text_encoder(
                out / "sdxl_clip_g_open_clip.safetensors", sdxl.text_encoders[1], "conditioner.embedders.1.model."),
            "sd2_clip_h.safetensors": write_open_clip_text_encoder(out / "sd2_clip_h.safetensors",
                                                                   sd2.text_encoders[0]),
        },
        "loras": {"sd1_lora.safetensors": write_kohya(random_lora(sd1.unet, sd1.text_encoders, seed=5),
                                                      out / "sd1_lora.safetensors")},
        "vae": {
            "sd1_vae.safetensors": write_comfy_vae(out / "sd1_vae.safetensors", sd1.vae),
            "sdxl_vae.safetensors": write_comfy_vae(out / "sdxl_vae.safetensors", sdxl.vae),
        },
    }
    # diffusers / transformers layouts: save_pretrained folders (weights + config.json), in the
    # folders' other names (models/unet, models/clip) to cover both.
    for family, models in (("sd1", sd1), ("sdxl", sdxl)):
        models.unet.save_pretrained(out / "unet" / f"{family}_unet")
        models.vae.save_pretrained(out / "vae" / f"{family}_vae")
        for index, encoder in enumerate(models.text_encoders):
            encoder.save_pretrained(out / "clip" / f"{family}_text_encoder{'_2' if index else ''}")
    return files, out


@pytest.fixture(scope="module")
def env(split_files, tmp_path_factory):
    files, out = split_files
    root = tmp_path_factory.mktemp("split_env")
    registry, runtime = model_env(root, files)
    for kind in ("unet", "vae", "clip"):
        shutil.copytree(out / kind, root / "models" / kind, dirs_exist_ok=True)
    registry.register(Capture)
    return registry, runtime


def run(env, document: dict):
    registry, runtime = env
    checked = prepare(document, registry, runtime=runtime)
    assert checked.ok, checked.response()
    return Executor(folders=runtime.folders, runtime=runtime).execute(checked.plan)


def txt2img(loaders: dict, model, clip, vae, key: str) -> dict:
    """A txt2img workflow over some loader nodes; the decoded image is captured under ``key``."""
    return loaders | {
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": clip}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": model, "seed": 3, "steps": 2, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": vae}},
        "7": {"class_type": "TestCapture", "inputs": {"value": ["6", 0], "key": key}},
    }


def checkpoint_image(env, family: str) -> torch.Tensor:
    """The image CheckpointLoaderSimple's parts give (made once per family)."""
    if f"ckpt-{family}" in CAPTURED:
        return CAPTURED[f"ckpt-{family}"][-1]
    document = txt2img({"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": f"{family}.safetensors"}}},
                       ["1", 0], ["1", 1], ["1", 2], f"ckpt-{family}")
    result = run(env, document)
    assert result.status == "success", result.error
    return CAPTURED[f"ckpt-{family}"][-1]


SPLIT = {
    ("sd1", "comfy"): ("sd1_unet.safetensors", ["sd1_clip_l.safetensors"], "sd1_vae.safetensors"),
    ("sd1", "diffusers"): ("sd1_unet/diffusion_pytorch_model.safetensors", ["sd1_text_encoder/model.safetensors"],
                           "sd1_vae/diffusion_pytorch_model.safetensors"),
    # bigG first: DualCLIPLoader takes SDXL's two encoders in either order, as ComfyUI does.
    ("sdxl", "comfy"): ("sdxl_unet.safetensors", ["sdxl_clip_g.safetensors", "sdxl_clip_l.safetensors"],
                        "sdxl_vae.safetensors"),
    ("sdxl", "open_clip"): ("sdxl_unet.safetensors", ["sdxl_clip_l.safetensors", "sdxl_clip_g_open_clip.safetensors"],
                            "sdxl_vae.safetensors"),
    ("sdxl", "diffusers"): ("sdxl_unet/diffusion_pytorch_model.safetensors",
                            ["sdxl_text_encoder/model.safetensors", "sdxl_text_encoder_2/model.safetensors"],
                            "sdxl_vae/diffusion_pytorch_model.safetensors"),
}


def split_loaders(unet: str, clips: list[str], vae: str, weight_dtype: str = "default") -> dict:
    if len(clips) == 1:
        clip = {"class_type": "CLIPLoader", "inputs": {"clip_name": clips[0], "type": "stable_diffusion"}}
    else:
        clip = {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": clips[0], "clip_name2": clips[1],
                                                           "type": "sdxl", "device": "default"}}
    return {
        "10": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": weight_dtype}},
        "11": clip,
        "12": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
    }


@pytest.mark.parametrize(("family", "layout"), list(SPLIT))
def test_split_files_give_the_checkpoint_image(env, family, layout):
    expected = checkpoint_image(env, family)
    key = f"split-{family}-{layout}"
    result = run(env, txt2img(split_loaders(*SPLIT[family, layout]), ["10", 0], ["11", 0], ["12", 0], key))
    assert result.status == "success", result.error
    image = CAPTURED[key][-1]
    assert image.shape == (1, 64, 64, 3)
    assert torch.equal(image, expected)


def test_a_lora_on_split_models_gives_the_checkpoint_lora_image(env):
    lora = {"class_type": "LoraLoader", "inputs": {"lora_name": "sd1_lora.safetensors", "strength_model": 0.8,
                                                    "strength_clip": 0.6}}
    ckpt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1.safetensors"}},
            "20": lora | {"inputs": lora["inputs"] | {"model": ["1", 0], "clip": ["1", 1]}}}
    split = split_loaders(*SPLIT["sd1", "comfy"]) | {
        "20": lora | {"inputs": lora["inputs"] | {"model": ["10", 0], "clip": ["11", 0]}}}
    assert run(env, txt2img(ckpt, ["20", 0], ["20", 1], ["1", 2], "lora-ckpt")).status == "success"
    assert run(env, txt2img(split, ["20", 0], ["20", 1], ["12", 0], "lora-split")).status == "success"
    with_lora = CAPTURED["lora-split"][-1]
    assert torch.equal(with_lora, CAPTURED["lora-ckpt"][-1])
    assert not torch.equal(with_lora, checkpoint_image(env, "sd1"))  # the LoRA changed the image


def test_a_changed_prompt_reuses_the_loaded_split_models(env):
    registry, runtime = env
    executor = Executor(folders=runtime.folders, runtime=runtime)
    document = txt2img(split_loaders(*SPLIT["sd1", "comfy"]), ["10", 0], ["11", 0], ["12", 0], "cache")
    assert executor.execute(prepare(document, registry, runtime=runtime).plan).status == "success"
    document["2"]["inputs"]["text"] = "a blue square"
    result = executor.execute(prepare(document, registry, runtime=runtime).plan)
    assert result.status == "success"
    assert not {"10", "11", "12"} & set(result.executed)


def test_handles_match_the_checkpoint_handles(env):
    """MODEL and CLIP carry what CheckpointLoaderSimple's carry, so downstream nodes see no difference."""
    from nodes.loaders import CheckpointLoaderSimple
    from nodes.split_loaders import DualCLIPLoader, UNETLoader

    registry, runtime = env
    context = SimpleNamespace(runtime=runtime)
    model, clip, _ = CheckpointLoaderSimple(context).execute("sdxl.safetensors")
    (split_model,) = UNETLoader(context).execute("sdxl_unet.safetensors", "default")
    (split_clip,) = DualCLIPLoader(context).execute("sdxl_clip_l.safetensors", "sdxl_clip_g.safetensors", "sdxl")
    for field in ("family", "prediction", "latent_scale", "in_channels", "device", "dtype"):
        assert getattr(split_model, field) == getattr(model, field), field
    assert torch.equal(split_model.schedule.sigmas, model.schedule.sigmas)
    assert (split_clip.family, split_clip.layouts, split_clip.device) == (clip.family, clip.layouts, clip.device)
    assert [type(e) for e in split_clip.encoders] == [type(e) for e in clip.encoders]
    assert type(split_model).cache_pool == type(split_clip).cache_pool == "models"  # POST /free unloads them


def test_sd2_parts_are_detected_by_structure(split_files, tiny_checkpoints):
    _, out = split_files
    loaded = load_unet_file(out / "sd2_unet.safetensors")
    assert (loaded.family, loaded.prediction_type) == ("sd2", "v_prediction")  # SD2.x's default rule
    clip = load_text_encoders([out / "sd2_clip_h.safetensors"], "stable_diffusion")
    assert (clip.family, clip.layouts) == ("sd2", ("open_clip",))
    original = tiny_checkpoints.models["sd2_v"].text_encoders[0]
    for name, tensor in original.state_dict().items():
        assert torch.equal(clip.encoders[0].state_dict()[name], tensor), name


def test_fp8_weight_dtype_stores_weights_in_8_bits(env):
    result = run(env, txt2img(split_loaders(*SPLIT["sd1", "comfy"], weight_dtype="fp8_e4m3fn"),
                              ["10", 0], ["11", 0], ["12", 0], "fp8"))
    assert result.status == "success", result.error
    image = CAPTURED["fp8"][-1]
    assert torch.isfinite(image).all() and image.shape == (1, 64, 64, 3)
    registry, runtime = env
    from nodes.split_loaders import UNETLoader

    (model,) = UNETLoader(SimpleNamespace(runtime=runtime)).execute("sd1_unet.safetensors", "fp8_e5m2")
    kinds = {m.weight.dtype for m in model.unet.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    assert kinds == {torch.float8_e5m2}
    assert model.unet.conv_in.bias.dtype == torch.float32


# ----------------------------------------------------------------------------- errors


def _error(env, document: dict) -> str:
    result = run(env, document)
    assert result.status == "error"
    return result.error["exception_message"]


def test_a_text_encoder_given_to_unetloader(env, split_files):
    files, out = split_files
    # Put a text encoder where UNETLoader looks.
    target = env[1].models.root / "diffusion_models" / "clip_l_by_mistake.safetensors"
    shutil.copy(files["text_encoders"]["sd1_clip_l.safetensors"], target)
    message = _error(env, {"1": {"class_type": "UNETLoader",
                                 "inputs": {"unet_name": "clip_l_by_mistake.safetensors", "weight_dtype": "default"}},
                           "2": {"class_type": "TestCapture", "inputs": {"value": ["1", 0], "key": "error"}}})
    assert "clip_l_by_mistake.safetensors" in message
    assert "expected an SD1.x, SD2.x or SDXL diffusion model" in message and "CLIP text encoder" in message


def test_a_unet_given_to_cliploader(env, split_files):
    files, _ = split_files
    target = env[1].models.root / "text_encoders" / "unet_by_mistake.safetensors"
    shutil.copy(files["diffusion_models"]["sd1_unet.safetensors"], target)
    message = _error(env, {"1": {"class_type": "CLIPLoader",
                                 "inputs": {"clip_name": "unet_by_mistake.safetensors", "type": "stable_diffusion"}},
                           "2": {"class_type": "TestCapture", "inputs": {"value": ["1", 0], "key": "error"}}})
    assert "unet_by_mistake.safetensors: expected a CLIP text encoder" in message and "UNETLoader" in message


def test_sdxl_bigg_given_to_cliploader_stable_diffusion(env):
    message = _error(env, {"1": {"class_type": "CLIPLoader",
                                 "inputs": {"clip_name": "sdxl_clip_g.safetensors", "type": "stable_diffusion"}},
                           "2": {"class_type": "TestCapture", "inputs": {"value": ["1", 0], "key": "error"}}})
    assert "sdxl_clip_g.safetensors is OpenCLIP bigG" in message and "DualCLIPLoader" in message


def test_dual_loader_sdxl_needs_clip_l_and_bigg(env):
    message = _error(env, {"1": {"class_type": "DualCLIPLoader",
                                 "inputs": {"clip_name1": "sd1_clip_l.safetensors",
                                            "clip_name2": "sd2_clip_h.safetensors", "type": "sdxl"}},
                           "2": {"class_type": "TestCapture", "inputs": {"value": ["1", 0], "key": "error"}}})
    assert "type sdxl expects SDXL's two text encoders" in message
    assert "sd1_clip_l.safetensors is CLIP-L" in message and "sd2_clip_h.safetensors is OpenCLIP ViT-H" in message


@pytest.mark.parametrize(("node", "inputs"), [
    ("CLIPLoader", {"clip_name": "sd1_clip_l.safetensors", "type": "flux2"}),
    ("DualCLIPLoader", {"clip_name1": "sdxl_clip_l.safetensors", "clip_name2": "sdxl_clip_g.safetensors",
                        "type": "flux"}),
])
def test_types_of_unsupported_families_validate_but_fail_clearly(env, node, inputs):
    message = _error(env, {"1": {"class_type": node, "inputs": inputs},
                           "2": {"class_type": "TestCapture", "inputs": {"value": ["1", 0], "key": "error"}}})
    assert f"type {inputs['type']!r} is for a model family Latentgraph does not support" in message


def test_other_families_are_named_in_the_error():
    flux_like = {"double_blocks.0.img_attn.qkv.weight": (9, 3), "img_in.weight": (3, 64)}
    with pytest.raises(UnknownCheckpointError, match=r"flux\.safetensors: expected an SD1.x.*transformer diffusion"):
        detect_unet(flux_like, "flux.safetensors")
    t5_like = {"shared.weight": (32, 8), "encoder.block.0.layer.0.SelfAttention.q.weight": (8, 8)}
    with pytest.raises(UnknownCheckpointError, match=r"t5\.safetensors: expected a CLIP text encoder.*T5"):
        detect_text_encoder(t5_like, name="t5.safetensors")
    vae_like = {"decoder.conv_in.weight": (8, 4, 3, 3), "encoder.conv_in.weight": (8, 3, 3, 3)}
    with pytest.raises(UnknownCheckpointError, match="a VAE: load it with VAELoader"):
        detect_unet(vae_like, "vae.safetensors")


def test_full_size_shapes_are_told_apart_without_a_config():
    """Without a config, the width says which CLIP (real files: 768, 1024, 1280)."""
    for width, kind in ((768, "clip_l"), (1024, "clip_h"), (1280, "clip_g")):
        shapes = {"text_model.embeddings.token_embedding.weight": (49408, width),
                  "text_model.encoder.layers.0.mlp.fc1.weight": (4 * width, width)}
        assert detect_text_encoder(shapes).kind == kind
    with pytest.raises(UnknownCheckpointError, match="width 32 with 1 layers"):
        detect_text_encoder({"embeddings.token_embedding.weight": (49408, 32),
                             "encoder.layers.0.mlp.fc1.weight": (64, 32)})


def test_a_controlnet_is_not_taken_for_a_unet():
    controlnet_like = {"control_model.input_blocks.0.0.weight": (32, 4, 3, 3),
                       "control_model.input_blocks.1.1.proj_in.weight": (32, 32, 1, 1),
                       "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (32, 32),
                       "control_model.zero_convs.0.0.weight": (32, 32, 1, 1)}
    with pytest.raises(UnknownCheckpointError, match=r"cn\.safetensors: .*no control_model\.output_blocks\..*ControlNet"):
        detect_unet(controlnet_like, "cn.safetensors")


def test_the_split_loaders_read_the_parts_of_a_whole_checkpoint(tiny_checkpoints):
    """ComfyUI's UNETLoader and CLIPLoader accept a whole checkpoint too: its UNet / text encoder is read."""
    unet = load_unet_file(tiny_checkpoints.sd1)
    assert (unet.info.layout, unet.info.prefix, unet.family) == ("ldm", "model.diffusion_model.", "sd1")
    original = tiny_checkpoints.models["sd1"]
    for name, tensor in original.unet.state_dict().items():
        assert torch.equal(unet.unet.state_dict()[name], tensor), name
    clip = load_text_encoders([tiny_checkpoints.sd1], "stable_diffusion")
    assert clip.infos[0].prefix == "cond_stage_model.transformer.text_model."
    for name, tensor in original.text_encoders[0].state_dict().items():
        assert torch.equal(clip.encoders[0].state_dict()[name], tensor), name
    with pytest.raises(UnknownCheckpointError, match="holds 2 text encoders"):
        load_text_encoders([tiny_checkpoints.sdxl], "stable_diffusion")


def test_checkpointsave_of_split_parts_writes_the_combined_checkpoint(env, tiny_checkpoints):
    """Split parts saved with CheckpointSave give back the combined file's tensors, key for key."""
    from safetensors.torch import load_file

    document = split_loaders(*SPLIT["sdxl", "diffusers"]) | {
        "20": {"class_type": "CheckpointSave", "inputs": {"model": ["10", 0], "clip": ["11", 0], "vae": ["12", 0],
                                                          "filename_prefix": "checkpoints/from_split"}}}
    result = run(env, document)
    assert result.status == "success", result.error
    saved = sorted((env[1].folders.output / "checkpoints").glob("from_split_*.safetensors"))
    written, combined = load_file(str(saved[-1])), load_file(str(tiny_checkpoints.sdxl))
    assert set(written) == set(combined)
    assert all(torch.equal(written[k], combined[k]) for k in combined)


def _unet_shapes(in_channels: int = 4, context: int = 768, adm: int = 0) -> dict:
    shapes = {"input_blocks.0.0.weight": (320, in_channels, 3, 3), "input_blocks.1.1.proj_in.weight": (320, 320),
              "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, context),
              "output_blocks.0.0.in_layers.0.weight": (1280,)}
    return shapes | ({"label_emb.0.0.weight": (1280, adm)} if adm else {})


def test_unets_of_unsupported_variants_are_refused_by_name():
    assert detect_unet(_unet_shapes(context=1024)).family == "sd2"
    assert detect_unet(_unet_shapes(context=2048, adm=2816)).family == "sdxl"
    with pytest.raises(UnknownCheckpointError, match=r"up\.safetensors: a UNet taking 7 input channels"):
        detect_unet(_unet_shapes(in_channels=7, context=1024), "up.safetensors")
    with pytest.raises(UnknownCheckpointError, match="class-conditioning input"):
        detect_unet(_unet_shapes(context=1024, adm=2048), "unclip.safetensors")
    with pytest.raises(UnknownCheckpointError, match="SDXL refiner"):
        detect_unet(_unet_shapes(context=1280, adm=2560), "refiner.safetensors")


def test_an_inpainting_unet_keeps_its_nine_input_channels(tiny_checkpoints):
    loaded = load_unet_file(tiny_checkpoints.sd1_inpaint)
    assert loaded.in_channels == 9 and loaded.unet.config.in_channels == 9


def test_a_unet_inside_a_diffusers_folder_takes_its_scheduler_prediction(tiny_checkpoints, tmp_path):
    folder = shutil.copytree(tiny_checkpoints.diffusers_sd1, tmp_path / "pipeline")
    scheduler = folder / "scheduler" / "scheduler_config.json"
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    assert load_unet_file(weights).prediction_type == "epsilon"
    scheduler.write_text(json.dumps(json.loads(scheduler.read_text()) | {"prediction_type": "v_prediction"}))
    loaded = load_unet_file(weights)
    assert (loaded.prediction_type, loaded.prediction_source) == ("v_prediction", "diffusers scheduler_config.json")
    assert loaded.info.layout == "diffusers" and loaded.family == "sd1"
