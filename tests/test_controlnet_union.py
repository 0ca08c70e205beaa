"""Union ControlNets (ControlNet++): loading in diffusers' layout (single file and folder),
residuals against diffusers' own ``ControlNetUnionModel``, ComfyUI's "auto", and
SetUnionControlNetType through the engine on the tiny SDXL checkpoint (nothing downloaded)."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from diffusers import ControlNetModel, ControlNetUnionModel, UNet2DConditionModel
from safetensors.torch import save_file

from nodes.controlnet.load import empty_controlnet, load_controlnet
from nodes.controlnet.structure import inspect_controlnet
from nodes.controlnet.union import union_residuals
from nodes.controlnet.union_types import UNION_TYPES
from nodes.controlnet_nodes import UNION_TYPE_NAMES, SetUnionControlNetType
from nodes.models.detect import CONFIG_METADATA_KEY
from nodes.models.errors import UnknownCheckpointError
from nodes.models.family_config import bundled_configs
from tests.fixtures.model_env import model_env
from tests.fixtures.tiny_controlnets import (
    ZERO_PARTS,
    config_of,
    save_diffusers_file,
    save_ldm,
    save_square_hint,
    tiny_controlnet,
)
from tests.test_controlnet_sampling import Runs

pytest_plugins = ["tests.fixtures.tiny_models"]

# ComfyUI 0.3.64's SetUnionControlNetType "type" choices (comfy_extras/nodes_controlnet.py with
# comfy/cldm/control_types.py), written out: the test must not read our own table
COMFY_TYPES = ["auto", "openpose", "depth", "hed/pidi/scribble/ted", "canny/lineart/anime_lineart/mlsd", "normal",
               "segment", "tile", "repaint"]
UNION_PARTS = ("spatial_ch_projs.",)  # zero-initialised in diffusers, like the zero convolutions


def tiny_union(unet, types: int = 8, seed: int = 0, zero: bool = False) -> ControlNetUnionModel:
    """A union ControlNet copied from ``unet`` (as ``ControlNetUnionModel.from_unet``, whose
    fixed 320-wide union parts do not fit a tiny UNet: here they are the UNet's width), its
    zero convolutions random unless ``zero``, its union parts always random."""
    plain = ControlNetModel.from_unet(unet)
    params = set(inspect.signature(ControlNetUnionModel.__init__).parameters)
    config = {k: v for k, v in config_of(plain).items() if k in params}
    width = plain.config.block_out_channels[0]
    torch.manual_seed(seed)
    net = ControlNetUnionModel(**config, num_control_type=types, num_trans_channel=width, num_proj_channel=width)
    missing, unexpected = net.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("task_embedding", "transformer_layes", "spatial_ch_projs",
                                                "control_add_embedding")) for k in missing)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(UNION_PARTS) or (name.startswith(ZERO_PARTS) and not zero):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return net.eval()


def save_union(net, path, with_config: bool = False):
    """Diffusers-named weights in one ``.safetensors`` (as published); ``with_config`` puts the
    architecture in the metadata (the tiny sizes are not the SDXL family's)."""
    if not with_config:
        return save_diffusers_file(net, path)
    metadata = {CONFIG_METADATA_KEY: json.dumps({"controlnet": config_of(net)})}
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="module")
def unet(tiny_checkpoints):
    return tiny_checkpoints.models["sdxl"].unet


@pytest.fixture(scope="module")
def union(unet):
    return tiny_union(unet, seed=5)


def _inputs(net, rows=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 4, 8, 8, generator=g)
    context = torch.randn(rows, 5, net.config.cross_attention_dim, generator=g)
    hint = torch.rand(rows, 3, 64, 64, generator=g)
    pooled = net.config.projection_class_embeddings_input_dim - 6 * net.config.addition_time_embed_dim
    added = {"text_embeds": torch.randn(rows, pooled, generator=g), "time_ids": torch.rand(rows, 6, generator=g) * 64}
    return x, torch.tensor([500.0, 20.0][:rows]), context, hint, added


def _ours(net, control_type, scale=0.7, seed=0):
    x, t, context, hint, added = _inputs(net, seed=seed)
    with torch.no_grad():
        down, mid = union_residuals(net, x, t, context, hint, control_type, scale, added)
    return [*down, mid]


def _equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_single_file_and_folder_load_every_tensor(union, tmp_path, tiny_checkpoints):
    state = union.state_dict()
    file = save_union(union, tmp_path / "union.safetensors")
    union.save_pretrained(tmp_path / "folder")
    handles = {
        "file (config inferred)": load_controlnet(file, config_root=tiny_checkpoints.config_root),
        "folder": load_controlnet(tmp_path / "folder"),
        "folder's weights": load_controlnet(tmp_path / "folder" / "diffusion_pytorch_model.safetensors"),
    }
    for how, handle in handles.items():
        assert isinstance(handle.model, ControlNetUnionModel) and handle.kind == "union", how
        assert handle.family == "sdxl" and handle.control_type is None and handle.size_bytes() > 0, how
        loaded = handle.model.state_dict()
        assert set(loaded) == set(state), how
        assert all(torch.equal(loaded[k], state[k]) for k in state), how
        for key in ("num_control_type", "num_trans_channel", "num_proj_channel", "num_trans_layer", "num_trans_head",
                    "addition_time_embed_dim"):
            assert handle.model.config[key] == union.config[key], (how, key)
        assert _equal(_ours(handle.model, 3), _ours(union, 3)), how


def test_a_six_type_union_is_read_from_its_shapes(unet, tmp_path, tiny_checkpoints):
    net = tiny_union(unet, types=6, seed=1)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    info = inspect_controlnet(shapes, config_root=tiny_checkpoints.config_root)
    assert info.union and info.layout == "diffusers" and info.config["num_control_type"] == 6
    handle = load_controlnet(save_union(net, tmp_path / "six.safetensors"), config_root=tiny_checkpoints.config_root)
    assert handle.model.config.num_control_type == 6


def test_promax_weights_beside_a_six_type_config_follow_their_shapes(unet, union, tmp_path):
    """As in xinsir's repository: diffusion_pytorch_model_promax.safetensors (8 types) lies
    beside the 6-type model's config.json; the union sizes come from the tensors."""
    tiny_union(unet, types=6).save_pretrained(tmp_path)
    promax = save_union(union, tmp_path / "diffusion_pytorch_model_promax.safetensors")
    handle = load_controlnet(promax)
    assert handle.kind == "union" and handle.model.config.num_control_type == 8
    state = union.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in handle.model.state_dict().items())


@pytest.mark.parametrize("types", [6, 8])
def test_structure_of_full_size_union_controlnets(types):
    """controlnet-union-sdxl-1.0 (6 types) and its promax variant (8), built full size on the
    meta device (no memory): recognised from their shapes alone, with no config, and the
    inferred ControlNetUnionModel has their shapes."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(bundled_configs("sdxl").unet)
        net = ControlNetUnionModel.from_unet(unet, load_weights_from_unet=False)
        if types != net.config.num_control_type:
            net = ControlNetUnionModel.from_config({**config_of(net), "num_control_type": types})
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    info = inspect_controlnet(shapes)
    assert info.union and info.family == "sdxl" and info.config_source == "inferred from the structure"
    assert info.config["num_control_type"] == types and info.config["num_trans_channel"] == 320
    built = empty_controlnet(info.config, union=True)
    assert isinstance(built, ControlNetUnionModel)
    assert {k: tuple(v.shape) for k, v in built.state_dict().items()} == shapes
    assert built.config.attention_head_dim == net.config.attention_head_dim


@pytest.mark.parametrize("control_type", [0, 3, 7])
def test_residuals_equal_diffusers_forward_row_by_row(union, control_type):
    """diffusers' ControlNetUnionModel on each row alone (its attention runs over the batch
    axis, so only one row at a time is ComfyUI's computation) against ours on both rows."""
    x, t, context, hint, added = _inputs(union)
    rows = []
    with torch.no_grad():
        for r in range(2):
            flags = torch.zeros(1, union.config.num_control_type)
            flags[0, control_type] = 1.0
            down, mid = union(x[r:r + 1], t[r:r + 1], context[r:r + 1], [hint[r:r + 1]], flags, [control_type], 0.7,
                              added_cond_kwargs={k: v[r:r + 1] for k, v in added.items()}, return_dict=False)
            rows.append([*down, mid])
    theirs = [torch.cat(parts) for parts in zip(*rows, strict=True)]
    ours = _ours(union, control_type)
    assert len(ours) == len(theirs) == len(union.controlnet_down_blocks) + 1
    for a, b in zip(ours, theirs, strict=True):
        # fp32; the residuals are of size ~10: a few 1e-6 of rounding in a different order
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-5)
    # each row is computed on its own: the batch gives row 0 what row 0 alone gives
    x1, t1, c1, h1, a1 = _inputs(union)
    with torch.no_grad():
        alone = union_residuals(union, x1[:1], t1[:1], c1[:1], h1[:1], control_type, 0.7,
                                {k: v[:1] for k, v in a1.items()})
    for a, b in zip([*alone[0], alone[1]], ours, strict=True):
        torch.testing.assert_close(a, b[:1], atol=5e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_close_to_float32(union, tmp_path, tiny_checkpoints, dtype):
    """GPU users load in bf16/fp16 (here on the CPU): no dtype mix-up, results near fp32's."""
    handle = load_controlnet(save_union(union, tmp_path / "u.safetensors"), dtype=dtype,
                             config_root=tiny_checkpoints.config_root)
    x, t, context, hint, added = _inputs(union)
    with torch.no_grad():
        down, mid = union_residuals(handle.model, x.to(dtype), t, context.to(dtype), hint.to(dtype), 3, 0.7,
                                    {k: v.to(dtype) for k, v in added.items()})
    for a, b in zip([*down, mid], _ours(union, 3), strict=True):
        assert a.dtype == dtype
        assert (a.float() - b).abs().max() <= 0.05 * b.abs().max()


def test_each_type_gives_its_own_residuals(union):
    results = {index: _ours(union, index) for index in range(8)}
    results[None] = _ours(union, None)
    keys = list(results)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert max((p - q).abs().max().item() for p, q in zip(results[a], results[b], strict=True)) > 1e-3, (a, b)


def test_auto_is_comfyuis_plain_hint_path_with_the_empty_type_embedding(union):
    """ComfyUI's "auto" (an empty control_type list): the time embedding gets
    control_add_embedding of all-zero type flags, and the hint goes through the hint encoder
    alone (no task embedding, no attention). The oracle is diffusers' plain ControlNetModel
    with the union's weights, that embedding added through an identity class embedding."""
    params = set(inspect.signature(ControlNetModel.__init__).parameters)
    config = {k: v for k, v in config_of(union).items() if k in params} | {"class_embed_type": "identity"}
    plain = ControlNetModel(**config).eval()
    missing, _ = plain.load_state_dict(union.state_dict(), strict=False)
    assert not missing
    x, t, context, hint, added = _inputs(union)
    with torch.no_grad():
        zeros = torch.zeros(2 * union.config.num_control_type)
        type_embedding = union.control_add_embedding(union.control_type_proj(zeros).reshape(2, -1))
        down, mid = plain(x, t, context, hint, 0.7, class_labels=type_embedding, added_cond_kwargs=added,
                          return_dict=False)
        without = plain(x, t, context, hint, 0.7, class_labels=torch.zeros_like(type_embedding),
                        added_cond_kwargs=added, return_dict=False)
    ours = _ours(union, None)
    for a, b in zip(ours, [*down, mid], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # the all-zero flags' embedding is not nothing
    assert max((a - b).abs().max().item() for a, b in zip(ours, [*without[0], without[1]], strict=True)) > 1e-3


def test_wrong_files_get_clear_errors(union, tmp_path, tiny_checkpoints):
    shapes = {k: tuple(v.shape) for k, v in union.state_dict().items()}
    ldm = {"control_model.zero_convs.0.0.weight": (32, 32, 1, 1), "control_model.task_embedding": (8, 32),
           "control_model.control_add_embedding.linear_1.bias": (128,)}
    with pytest.raises(UnknownCheckpointError, match="union ControlNet in the LDM layout"):
        inspect_controlnet(ldm)
    no_task = {k: v for k, v in shapes.items() if k != "task_embedding"}
    with pytest.raises(UnknownCheckpointError, match="without tensor 'task_embedding'"):
        inspect_controlnet(no_task, config_root=tiny_checkpoints.config_root)
    with pytest.raises(UnknownCheckpointError, match="Control-LoRA"):
        inspect_controlnet({"lora_controlnet": (1,), **shapes})
    # control_add_embedding says 16 channels a type, the folder's config 8 (SDXL's size embedding)
    odd = dict(shapes, **{"control_add_embedding.linear_1.weight": (128, 8 * 16)})
    with pytest.raises(UnknownCheckpointError, match="cannot hold that"):
        inspect_controlnet(odd, folder_config=config_of(union))


def _net(path, tiny_checkpoints):
    return load_controlnet(path, config_root=tiny_checkpoints.config_root)


def test_the_node_makes_a_new_handle_and_refuses_missing_types(unet, union, tmp_path, tiny_checkpoints, caplog):
    handle = _net(save_union(union, tmp_path / "u.safetensors"), tiny_checkpoints)
    (typed,) = SetUnionControlNetType().execute(handle, "depth")
    assert typed.control_type == UNION_TYPES["depth"] == 1 and typed.model is handle.model
    assert handle.control_type is None and handle.size_bytes() > 0 and typed.size_bytes() == 0  # counted once
    (auto,) = SetUnionControlNetType().execute(typed, "auto")
    assert auto.control_type is None and typed.control_type == 1
    six = _net(save_union(tiny_union(unet, types=6), tmp_path / "six.safetensors"), tiny_checkpoints)
    assert SetUnionControlNetType().execute(six, "segment")[0].control_type == 5
    with pytest.raises(ValueError, match="6 control types; 'tile'.*promax"):
        SetUnionControlNetType().execute(six, "tile")
    plain = _net(save_ldm(tiny_controlnet(unet, seed=1), tmp_path / "plain.safetensors"), tiny_checkpoints)
    with caplog.at_level("WARNING"):
        (ignored,) = SetUnionControlNetType().execute(plain, "canny/lineart/anime_lineart/mlsd")
    assert ignored.kind == "controlnet" and "not a union ControlNet" in caplog.text
    with pytest.raises(ValueError, match="CONTROL_NET"):
        SetUnionControlNetType().execute("not a net", "depth")


def test_declaration_is_comfyuis(tiny_checkpoints, tmp_path):
    registry, runtime = model_env(tmp_path, {})
    info = registry.object_info(runtime)["SetUnionControlNetType"]
    assert info["input_order"] == {"required": ["control_net", "type"]}
    assert info["input"]["required"]["control_net"][0] == "CONTROL_NET"
    assert info["input"]["required"]["type"][0] == COMFY_TYPES
    assert info["output"] == ["CONTROL_NET"] and info["category"] == "conditioning/controlnet"
    assert info["display_name"] == "Set Union ControlNet Type"
    assert list(UNION_TYPE_NAMES) == list(UNION_TYPES) == COMFY_TYPES[1:]
    assert [UNION_TYPES[name] for name in COMFY_TYPES[1:]] == list(range(8))


# --- through the engine ------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tiny_checkpoints, unet, union, tmp_path_factory):
    root = tmp_path_factory.mktemp("union_env")
    nets = root / "nets"
    nets.mkdir()
    files = {
        "checkpoints": {"xl.safetensors": tiny_checkpoints.sdxl},
        "controlnet": {
            "union.safetensors": save_union(union, nets / "union.safetensors", with_config=True),
            "zero.safetensors": save_union(tiny_union(unet, seed=5, zero=True), nets / "zero.safetensors",
                                           with_config=True),
            "plain.safetensors": save_ldm(tiny_controlnet(unet, seed=3), nets / "plain.safetensors"),
        },
    }
    env = model_env(root, files)
    save_square_hint(env[1].folders.input)
    return Runs(env)


def workflow(net=None, control_type=None, apply="ControlNetApplyAdvanced"):
    """txt2img on the tiny SDXL checkpoint, optionally through one ControlNet whose type
    SetUnionControlNetType sets (``control_type`` None: no such node)."""
    doc = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "xl.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "h": {"class_type": "LoadImage", "inputs": {"image": "square.png"}},
    }
    pos, neg = ["2", 0], ["3", 0]
    if net is not None:
        doc["c"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": net}}
        control = ["c", 0]
        if control_type is not None:
            doc["t"] = {"class_type": "SetUnionControlNetType", "inputs": {"control_net": control, "type": control_type}}
            control = ["t", 0]
        if apply == "ControlNetApply":
            doc["a"] = {"class_type": "ControlNetApply", "inputs": {
                "conditioning": pos, "control_net": control, "image": ["h", 0], "strength": 1.0}}
            pos = ["a", 0]
        else:
            doc["a"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
                "positive": pos, "negative": neg, "control_net": control, "image": ["h", 0], "strength": 1.0,
                "start_percent": 0.0, "end_percent": 1.0}}
            pos, neg = ["a", 0], ["a", 1]
    doc["5"] = {"class_type": "KSampler", "inputs": {
        "model": ["1", 0], "seed": 3, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": pos, "negative": neg, "latent_image": ["4", 0], "denoise": 1.0}}
    return doc


@pytest.fixture(scope="module")
def base(runs):
    return runs.latent(workflow())


def test_zero_convolutions_give_exactly_the_base_image(runs, base):
    assert torch.equal(runs.latent(workflow("zero.safetensors", "depth")), base)
    assert torch.equal(runs.latent(workflow("zero.safetensors", "auto")), base)


def test_the_chosen_type_steers_the_union_controlnet(runs, base):
    depth = runs.latent(workflow("union.safetensors", "depth"))
    canny = runs.latent(workflow("union.safetensors", "canny/lineart/anime_lineart/mlsd"))
    auto = runs.latent(workflow("union.safetensors", "auto"))
    for a, b in ((depth, base), (canny, base), (auto, base), (depth, canny), (auto, depth)):
        assert (a - b).abs().max() > 1e-3
    # no SetUnionControlNetType is ComfyUI's "auto" (an empty control_type either way)
    assert torch.equal(runs.latent(workflow("union.safetensors")), auto)
    # the loader's cached handle is untouched: it still has no type
    loaded = runs.output("c")
    assert loaded.control_type is None and not loaded.shared
    # ControlNetApply runs the same typed network (applied to the uncond at sampling time)
    old = runs.latent(workflow("union.safetensors", "depth", apply="ControlNetApply"))
    assert (old - base).abs().max() > 1e-3
    torch.testing.assert_close(old, depth, atol=1e-5, rtol=1e-5)


def test_a_type_on_a_plain_controlnet_is_ignored_as_in_comfyui(runs):
    plain = runs.latent(workflow("plain.safetensors"))
    assert torch.equal(runs.latent(workflow("plain.safetensors", "depth")), plain)
