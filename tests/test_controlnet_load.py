"""Loading ControlNets: LDM and diffusers layouts for SD1, SD2 and SDXL, key maps checked
against diffusers' own conversion, structure detection on full-size shapes, refused kinds."""

from __future__ import annotations

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

from nodes.controlnet.keymap import controlnet_key_map
from nodes.controlnet.load import empty_controlnet, load_controlnet
from nodes.controlnet.structure import inspect_controlnet
from nodes.models.errors import ModelLoadError, UnknownCheckpointError, UnsafeFormatError
from nodes.models.family_config import bundled_configs
from nodes.models.keymap import scatter, with_prefix
from tests.fixtures.tiny_controlnets import (
    config_of,
    ldm_state,
    save_diff,
    save_diffusers_file,
    save_diffusers_folder,
    save_ldm,
    tiny_controlnet,
)

pytest_plugins = ["tests.fixtures.tiny_models"]

FAMILIES = {"sd1": "sd1", "sd2": "sd2_v", "sdxl": "sdxl"}


@pytest.fixture(scope="module")
def nets(tiny_checkpoints):
    return {family: tiny_controlnet(tiny_checkpoints.models[name].unet, seed=7) for family, name in FAMILIES.items()}


def _inputs(family, net, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    context = torch.randn(2, 5, net.config.cross_attention_dim, generator=g)
    hint = torch.rand(2, 3, 64, 64, generator=g)
    added = None
    if family == "sdxl":
        pooled = net.config.projection_class_embeddings_input_dim - 6 * net.config.addition_time_embed_dim
        added = {"text_embeds": torch.randn(2, pooled, generator=g), "time_ids": torch.rand(2, 6, generator=g) * 64}
    return x, torch.tensor([500.0, 20.0]), context, hint, added


def _outputs(net, family):
    x, t, context, hint, added = _inputs(family, net)
    with torch.no_grad():
        down, mid = net(x, t, encoder_hidden_states=context, controlnet_cond=hint, added_cond_kwargs=added,
                        return_dict=False)
    return [*down, mid]


@pytest.mark.parametrize("family", FAMILIES)
def test_ldm_key_map_matches_diffusers_conversion(nets, family):
    net = nets[family]
    ours = ldm_state(net, prefix="")
    theirs = convert_controlnet_checkpoint(dict(ours), config_of(net))
    state = net.state_dict()
    # diffusers' converter leaves SDXL's add_embedding (label_emb) out; every key it does write must agree
    assert set(theirs) <= set(state) and len(theirs) >= len(state) - 4
    for key, tensor in theirs.items():
        assert torch.equal(tensor, state[key]), key


@pytest.mark.parametrize("family", FAMILIES)
def test_every_layout_loads_the_same_network(nets, family, tmp_path, tiny_checkpoints):
    net = nets[family]
    expected = _outputs(net, family)
    paths = {
        "ldm": save_ldm(net, tmp_path / "ldm.safetensors"),
        "folder": save_diffusers_folder(net, tmp_path / "folder"),
        "folder_file": tmp_path / "folder" / "diffusion_pytorch_model.safetensors",
    }
    for layout, path in paths.items():
        handle = load_controlnet(path)
        assert handle.family == family, layout
        got = _outputs(handle.model, family)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), layout
    # no config anywhere: the structure and the family's config (here the tiny ones) say it all
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in (save_ldm(net, plain / "ldm.safetensors", with_config=False),
                 save_diffusers_file(net, plain / "diffusers.safetensors")):
        handle = load_controlnet(path, config_root=tiny_checkpoints.config_root)
        assert all(torch.equal(a, b) for a, b in zip(_outputs(handle.model, family), expected, strict=True)), path


def test_pth_loads_only_through_weights_only(nets, tmp_path, tiny_checkpoints):
    net = nets["sd1"]
    path = tmp_path / "cn.pth"
    torch.save({"state_dict": ldm_state(net)}, path)
    handle = load_controlnet(path, config_root=tiny_checkpoints.config_root)
    assert all(torch.equal(a, b) for a, b in zip(_outputs(handle.model, "sd1"), _outputs(net, "sd1"), strict=True))

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled",))

    evil = tmp_path / "evil.pth"
    torch.save({"control_model.zero_convs.0.0.weight": Evil()}, evil)
    with pytest.raises(UnsafeFormatError):
        load_controlnet(evil)


@pytest.mark.parametrize("config_name", ["sd1", "sd2", "sdxl"])
def test_structure_of_full_size_controlnets(config_name):
    """Full-size ControlNets (built on the meta device: no memory) are recognised from
    their LDM and diffusers shapes alone, and the inferred architecture has their shapes."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(bundled_configs(config_name).unet)
        net = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    state = net.state_dict()
    ldm = scatter(with_prefix(controlnet_key_map(state.keys(), config_of(net)), "control_model."), state)
    for shapes in ({k: tuple(v.shape) for k, v in ldm.items()}, {k: tuple(v.shape) for k, v in state.items()}):
        info = inspect_controlnet(shapes)
        assert info.family == config_name and info.config_source == "inferred from the structure"
        built = empty_controlnet(info.config).state_dict()
        assert {k: tuple(v.shape) for k, v in built.items()} == {k: tuple(v.shape) for k, v in state.items()}
        heads = info.config["attention_head_dim"]
        assert heads == (8 if config_name == "sd1" else [c // 64 for c in net.config.block_out_channels])


@pytest.mark.parametrize(("key", "what"), [
    ("control_add_embedding.linear_1.bias", "union ControlNet"),  # Control-LoRA loads: tests/test_controlnet_lora.py
    ("controlnet_blocks.0.weight", "transformer model"),
])
def test_refused_kinds_are_named(key, what):
    with pytest.raises(UnknownCheckpointError, match=what):
        inspect_controlnet({key: (4,), "zero_convs.0.0.weight": (4, 4, 1, 1)})


def test_a_checkpoint_is_not_a_controlnet(tiny_checkpoints):
    with pytest.raises(UnknownCheckpointError, match="whole checkpoint"):
        load_controlnet(tiny_checkpoints.sd1)


def test_diff_controlnet_needs_its_model(nets, tiny_checkpoints, tmp_path):
    unet = tiny_checkpoints.models["sd1"].unet
    path = save_diff(nets["sd1"], unet, tmp_path / "diff.safetensors", with_config=False)
    with pytest.raises(ModelLoadError, match="DiffControlNetLoader"):
        load_controlnet(path, config_root=tiny_checkpoints.config_root)
    handle = load_controlnet(path, base_unet=unet, config_root=tiny_checkpoints.config_root)
    expected = _outputs(nets["sd1"], "sd1")
    got = _outputs(handle.model, "sd1")
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, expected, strict=True))


def test_handle_is_a_cached_model(nets, tmp_path):
    handle = load_controlnet(save_ldm(nets["sd1"], tmp_path / "a.safetensors"))
    assert handle.cache_pool == "models" and handle.modules() == (handle.model,)
    assert handle.size_bytes() == sum(p.numel() * 4 for p in nets["sd1"].parameters())


def test_shuffle_controlnets_pool_their_residuals(nets, tmp_path):
    """As ComfyUI: a file named ..._shuffle averages each residual over the image."""
    plain = load_controlnet(save_ldm(nets["sd1"], tmp_path / "a.safetensors"))
    pooled = load_controlnet(save_ldm(nets["sd1"], tmp_path / "control_v11e_sd15_shuffle.safetensors"))
    for mine, full in zip(_outputs(pooled.model, "sd1"), _outputs(plain.model, "sd1"), strict=True):
        assert mine.shape[-2:] == (1, 1) and torch.allclose(mine, full.mean(dim=(2, 3), keepdim=True), atol=1e-6)
