"""Control-LoRA files (Stability AI's control-lora-*-rank*.safetensors): loading, the network
built from the sampled model against a ground truth made here with diffusers, and whole
workflows on the tiny SD1 and SDXL checkpoints (nothing downloaded).

The tiny Control-LoRA is made as Stability AI's are laid out (ComfyUI 0.3.64's
``ControlLora`` reads them): LDM ControlNet names without prefix, a ``lora_controlnet``
marker, whole tensors for the hint encoder, the zero convolutions and a few biases and
norms, and ``up``/``down`` pairs for conv and linear layers the model has. The LDM names are
written out below for the tiny UNets' layout, not taken from our key map.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel
from safetensors.torch import save_file

from graph import prepare
from nodes.controlnet.control_lora import ControlLoraWeights, build_network
from nodes.controlnet.handle import ControlLink
from nodes.controlnet.load import load_controlnet
from nodes.controlnet.residuals import ControlRows
from nodes.controlnet.structure import inspect_controlnet
from nodes.models.errors import UnknownCheckpointError
from nodes.sampling import sd_schedule
from nodes.sd.handles import ModelHandle
from tests.fixtures.model_env import model_env
from tests.fixtures.tiny_controlnets import save_ldm, save_square_hint, tiny_controlnet
from tests.fixtures.tiny_loras import merge_by_hand, random_lora, write_kohya
from tests.test_controlnet_sampling import Runs, workflow

pytest_plugins = ["tests.fixtures.tiny_models"]

# diffusers layer -> LDM (cldm) layer, for the tiny UNets (two levels of two layers: LDM's
# input_blocks 1, 2 | 3 = downsampler | 4, 5); the layers the Control-LoRA changes by low rank
LORA_LAYERS = {
    "sdxl": {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "add_embedding.linear_2": "label_emb.0.2",
        "down_blocks.0.resnets.1.conv1": "input_blocks.2.0.in_layers.2",
        "down_blocks.0.downsamplers.0.conv": "input_blocks.3.0.op",
        "down_blocks.1.resnets.0.conv_shortcut": "input_blocks.4.0.skip_connection",
        "down_blocks.1.attentions.0.proj_in": "input_blocks.4.1.proj_in",
        "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj":
            "input_blocks.4.1.transformer_blocks.0.ff.net.0.proj",
        "down_blocks.1.attentions.1.transformer_blocks.1.attn2.to_k": "input_blocks.5.1.transformer_blocks.1.attn2.to_k",
        "mid_block.resnets.1.conv2": "middle_block.2.out_layers.3",
        "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0":
            "middle_block.1.transformer_blocks.0.attn1.to_out.0",
    },
    "sd1": {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_2": "time_embed.2",
        "down_blocks.0.resnets.0.conv1": "input_blocks.1.0.in_layers.2",
        "down_blocks.0.attentions.1.proj_in": "input_blocks.2.1.proj_in",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
        "down_blocks.1.resnets.0.conv_shortcut": "input_blocks.4.0.skip_connection",
        "down_blocks.1.resnets.1.time_emb_proj": "input_blocks.5.0.emb_layers.1",
        "mid_block.resnets.0.conv1": "middle_block.0.in_layers.2",
        "mid_block.attentions.0.proj_out": "middle_block.1.proj_out",
    },
}
# whole tensors the file replaces besides the ControlNet's own parts (a bias, a norm scale)
FULL_LAYERS = {
    "sdxl": {"down_blocks.0.resnets.0.norm1.weight": "input_blocks.1.0.in_layers.0.weight",
             "down_blocks.1.attentions.0.proj_in.bias": "input_blocks.4.1.proj_in.bias"},
    "sd1": {"down_blocks.0.resnets.0.norm1.weight": "input_blocks.1.0.in_layers.0.weight",
            "mid_block.attentions.0.proj_out.bias": "middle_block.1.proj_out.bias"},
}


def own_part_ldm_name(key: str) -> str | None:
    """The LDM name of a ControlNet-only tensor (hint encoder, zero convolutions), by cldm's
    layout: the hint encoder's convs sit at even indices of ``input_hint_block`` (0, 2, 4...,
    14 for four widths), zero conv N is ``zero_convs.N.0``."""
    parts = key.split(".")
    if parts[0] == "controlnet_down_blocks":
        return f"zero_convs.{parts[1]}.0.{parts[2]}"
    if parts[0] == "controlnet_mid_block":
        return f"middle_block_out.0.{parts[1]}"
    if parts[0] == "controlnet_cond_embedding":
        index = {"conv_in": 0, "conv_out": 14}.get(parts[1])
        if index is None:
            index, parts = 2 + 2 * int(parts[2]), parts[1:]
        return f"input_hint_block.{index}.{parts[2]}"
    return None


def make_control_lora(unet, family: str, seed: int = 0, zero: bool = False, rank: int = 3
                      ) -> tuple[dict[str, torch.Tensor], dict]:
    """``(file tensors by LDM name, changes)``: a Control-LoRA for ``unet``, random (its zero
    convolutions zero with ``zero``). ``changes``: diffusers name -> ``("full", tensor)`` or
    ``("lora", up, down)``, for :func:`ground_truth`."""
    g = torch.Generator().manual_seed(seed)
    reference = ControlNetModel.from_unet(unet)
    state = reference.state_dict()
    tensors, changes = {"lora_controlnet": torch.tensor([])}, {}
    for key, value in state.items():
        ldm = own_part_ldm_name(key)
        if ldm is not None:
            own_zero = zero and key.startswith(("controlnet_down_blocks.", "controlnet_mid_block."))
            tensor = torch.zeros_like(value) if own_zero else torch.randn(value.shape, generator=g) * 0.2
            tensors[ldm], changes[key] = tensor, ("full", tensor)
    for key, ldm in FULL_LAYERS[family].items():
        tensor = state[key] + torch.randn(state[key].shape, generator=g) * 0.1
        tensors[ldm], changes[key] = tensor, ("full", tensor)
    for name, ldm in LORA_LAYERS[family].items():
        layer = reference.get_submodule(name)
        if isinstance(layer, torch.nn.Linear):
            down, up = (rank, layer.in_features), (layer.out_features, rank)
        else:
            down, up = (rank, layer.in_channels, *layer.kernel_size), (layer.out_channels, rank, 1, 1)
        down = torch.randn(down, generator=g) / layer.weight[0].numel() ** 0.5
        up = torch.randn(up, generator=g) * 0.3
        tensors[f"{ldm}.up"], tensors[f"{ldm}.down"] = up, down
        changes[f"{name}.weight"] = ("lora", up, down)
    return tensors, changes


def ground_truth(unet, changes: dict) -> ControlNetModel:
    """diffusers' ControlNet of ``unet`` with the changes: whole tensors set, low-rank ones
    added (ComfyUI's ``weight + (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)``)."""
    net = ControlNetModel.from_unet(unet).eval()
    with torch.no_grad():
        params = dict(net.named_parameters())
        for key, change in changes.items():
            if change[0] == "full":
                params[key].copy_(change[1])
            else:
                _, up, down = change
                params[key].add_((up.flatten(1) @ down.flatten(1)).reshape(params[key].shape))
    return net


def save_control_lora(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def model_handle(unet, family: str, dtype=torch.float32) -> ModelHandle:
    return ModelHandle(unet=unet, family=family, prediction="eps", schedule=sd_schedule(), latent_scale=0.13025,
                       in_channels=4, device=torch.device("cpu"), dtype=dtype, source=Path("model"))


def _inputs(unet, family: str, rows: int = 2, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 4, 8, 8, generator=g)
    context = torch.randn(rows, 5, unet.config.cross_attention_dim, generator=g)
    added = None
    if family == "sdxl":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        added = {"text_embeds": torch.randn(rows, pooled, generator=g), "time_ids": torch.rand(rows, 6, generator=g)}
    return x, torch.tensor([500.0, 20.0][:rows]), context, torch.rand(1, 3, 64, 64, generator=g), added


def ours(handle, model, inputs, strength: float = 0.7, cache: dict | None = None) -> list[torch.Tensor]:
    """The residuals our sampling path adds for one conditioning entry of ``len(x)`` rows."""
    x, t, context, hint, added = inputs
    link = ControlLink(handle, hint, strength)
    rows = ControlRows.join([ControlRows.of_entry({"control": link})], batch=x.shape[0])
    kwargs = rows.at(5.0, {} if cache is None else cache).unet_kwargs(model, x, t, context, **(added or {}))
    return [*kwargs["down_block_additional_residuals"], kwargs["mid_block_additional_residual"]]


def theirs(net, inputs, strength: float = 0.7) -> list[torch.Tensor]:
    x, t, context, hint, added = inputs
    down, mid = net(x, t, encoder_hidden_states=context, controlnet_cond=hint.expand(x.shape[0], -1, -1, -1),
                    conditioning_scale=strength, added_cond_kwargs=added, return_dict=False)
    return [*down, mid]


@pytest.fixture(scope="module", params=["sdxl", "sd1"])
def made(request, tiny_checkpoints, tmp_path_factory):
    family = request.param
    unet = tiny_checkpoints.models[family].unet
    tensors, changes = make_control_lora(unet, family, seed=7)
    path = save_control_lora(tensors, tmp_path_factory.mktemp("control_lora") / f"cl_{family}.safetensors")
    return family, unet, tensors, changes, path


def test_loads_its_tensors_without_a_network(made):
    family, _, tensors, _, path = made
    handle = load_controlnet(path)
    assert handle.kind == "control_lora" and handle.family == family and handle.hint_channels == 3
    weights = handle.model
    assert isinstance(weights, ControlLoraWeights) and not any(isinstance(m, ControlNetModel) for m in weights.modules())
    full, pairs = weights.full(), weights.pairs()
    assert set(full) == {k for k in tensors if k.endswith((".weight", ".bias"))}
    assert set(pairs) == {k[:-len(".up")] + ".weight" for k in tensors if k.endswith(".up")}
    assert all(torch.equal(full[k], tensors[k]) for k in full)
    assert all(torch.equal(up, tensors[k[:-7] + ".up"]) and torch.equal(down, tensors[k[:-7] + ".down"])
               for k, (up, down) in pairs.items())
    expected = sum(v.numel() * v.element_size() for k, v in tensors.items() if k != "lora_controlnet")
    assert handle.size_bytes() == expected
    # DiffControlNetLoader's model is not needed (ComfyUI ignores it for these too)
    assert load_controlnet(path, base_unet=object()).kind == "control_lora"


def test_the_built_network_is_the_ground_truth(made):
    family, unet, _, changes, path = made
    truth = ground_truth(unet, changes)
    handle = load_controlnet(path)
    built = build_network(handle.model, model_handle(unet, family))
    expected = truth.state_dict()
    state = built.state_dict()
    assert set(state) == set(expected)
    # the same float32 operations in the same order: bit for bit
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    # weights the file does not touch are the model's own tensors, not copies
    untouched = "down_blocks.0.resnets.0.conv2.weight"
    assert state[untouched].data_ptr() == unet.get_parameter(untouched).data_ptr()
    inputs = _inputs(unet, family)
    with torch.no_grad():
        mine, reference = ours(handle, model_handle(unet, family), inputs), theirs(truth, inputs)
    assert len(mine) == len(reference) == len(truth.controlnet_down_blocks) + 1
    for a, b in zip(mine, reference, strict=True):
        # float32; the hint is encoded once (same convolutions): a few 1e-7 at most
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert a.abs().max() > 1e-2  # residuals that do something


def test_sampling_counts_the_networks_new_bytes(made, tiny_checkpoints):
    """The placement estimate (``sampling_bytes``) is what building allocates: the tensors
    of the network that are not the model's."""
    family, unet, _, _, path = made
    handle = load_controlnet(path)
    built = build_network(handle.model, model_handle(unet, family))
    shared = {t.data_ptr() for t in unet.parameters()}
    new = sum(t.numel() * t.element_size() for t in built.parameters() if t.data_ptr() not in shared)
    assert handle.sampling_bytes(torch.float32) == new > 0
    assert handle.sampling_bytes(torch.float16) == new // 2
    plain = load_controlnet(save_ldm(tiny_controlnet(unet), path.with_name("plain.safetensors")),
                            config_root=tiny_checkpoints.config_root)
    assert plain.sampling_bytes(torch.float32) == 0


def test_built_once_per_run_in_the_run_cache(made, monkeypatch):
    family, unet, _, _, path = made
    handle, model = load_controlnet(path), model_handle(unet, family)
    builds = []
    original = ControlNetModel.from_unet

    def counting(*args, **kwargs):
        builds.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(ControlNetModel, "from_unet", counting)
    cache: dict = {}
    inputs = _inputs(unet, family)
    with torch.no_grad():
        first = ours(handle, model, inputs, cache=cache)
        second = ours(handle, model, inputs, cache=cache)  # a second step of the same run
        assert len(builds) == 1 and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
        ours(handle, model, inputs, cache={})  # another run builds again (ComfyUI's pre_run)
    assert len(builds) == 2


def test_half_precision_builds_in_the_models_dtype(made):
    family, unet, _, changes, path = made
    dtype = torch.bfloat16
    half = copy.deepcopy(unet).to(dtype)
    built = build_network(load_controlnet(path).model, model_handle(half, family, dtype))
    assert {p.dtype for p in built.parameters()} == {dtype}
    inputs = _inputs(unet, family)
    x, t, context, hint, added = inputs
    cast = (x.to(dtype), t, context.to(dtype), hint.to(dtype), {k: v.to(dtype) for k, v in added.items()} if added
            else None)
    with torch.no_grad():
        got, want = theirs(built, cast), theirs(ground_truth(unet, changes), inputs)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype and (a.float() - b).abs().max() <= 0.05 * b.abs().max()


def test_wrong_files_get_clear_errors(made, tiny_checkpoints, tmp_path):
    family, unet, tensors, _, _ = made
    # for another model: the family check of sampling (below) or the shapes
    other = tiny_checkpoints.models["sdxl" if family == "sd1" else "sd1"].unet
    with pytest.raises(ValueError, match="another model"):
        build_network(load_controlnet(save_control_lora(tensors, tmp_path / "a.safetensors")).model,
                      model_handle(other, family))
    no_zero = {k: v for k, v in tensors.items() if not k.startswith("zero_convs.0.")}
    with pytest.raises(UnknownCheckpointError, match="without zero_convs.0.0.weight"):
        load_controlnet(save_control_lora(no_zero, tmp_path / "b.safetensors"))
    unpaired = {k: v for k, v in tensors.items() if k != "input_blocks.0.0.down"}
    with pytest.raises(UnknownCheckpointError, match=r"input_blocks\.0\.0\.up has no input_blocks\.0\.0\.down"):
        load_controlnet(save_control_lora(unpaired, tmp_path / "c.safetensors"))
    stray = dict(tensors, **{"output_blocks.0.0.in_layers.2.up": torch.zeros(4, 1, 1, 1),
                             "output_blocks.0.0.in_layers.2.down": torch.zeros(1, 4, 3, 3)})
    with pytest.raises(ValueError, match="output_blocks.0.0.in_layers.2.weight"):
        build_network(load_controlnet(save_control_lora(stray, tmp_path / "d.safetensors")).model,
                      model_handle(unet, family))
    # an inpainting UNet: a ControlNet gets the 4-channel latent, not the UNet's 9 channels
    if family == "sd1":
        inpaint = tiny_checkpoints.models["sd1_inpaint"].unet
        with pytest.raises(ValueError, match="9 input channels"):
            build_network(load_controlnet(save_control_lora(tensors, tmp_path / "e.safetensors")).model,
                          model_handle(inpaint, "sd1"))


def test_structure_inspection_points_to_the_loader():
    """inspect_controlnet reads whole ControlNets; a Control-LoRA is no longer refused as
    unsupported, it is sent to load_controlnet."""
    with pytest.raises(UnknownCheckpointError, match="load it with load_controlnet") as error:
        inspect_controlnet({"lora_controlnet": (0,), "zero_convs.0.0.weight": (4, 4, 1, 1)})
    assert "not supported" not in str(error.value)


# --- through the engine ------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tiny_checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("control_lora_env")
    sdxl = tiny_checkpoints.models["sdxl"]
    files = root / "files"
    files.mkdir()
    guided, _ = make_control_lora(sdxl.unet, "sdxl", seed=3)
    zero, _ = make_control_lora(sdxl.unet, "sdxl", seed=3, zero=True)
    env = model_env(root, {
        "checkpoints": {"base.safetensors": tiny_checkpoints.sd1, "xl.safetensors": tiny_checkpoints.sdxl},
        "controlnet": {"cl.safetensors": save_control_lora(guided, files / "cl.safetensors"),
                       "cl_zero.safetensors": save_control_lora(zero, files / "cl_zero.safetensors")},
        "loras": {"xl_lora.safetensors": write_kohya(random_lora(sdxl.unet, [], seed=11), files / "l.safetensors")},
    })
    save_square_hint(env[1].folders.input)
    return Runs(env)


def xl(*applies, lora: bool = False, steps: int = 2) -> dict:
    """txt2img on the tiny SDXL checkpoint through Control-LoRAs, ``lora``: its MODEL through
    LoraLoaderModelOnly."""
    doc = workflow(*applies, ckpt="xl.safetensors", steps=steps, model=("l", 0) if lora else ("1", 0))
    if lora:
        doc["l"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
            "model": ["1", 0], "lora_name": "xl_lora.safetensors", "strength_model": 1.0}}
    return doc


GUIDED = ("cl.safetensors", 1.0, 0.0, 1.0)


def test_zero_convolutions_give_exactly_the_base_latent(runs):
    base = runs.latent(xl())
    assert torch.equal(runs.latent(xl(("cl_zero.safetensors", 1.0, 0.0, 1.0))), base)
    guided = runs.latent(xl(GUIDED))
    assert (guided - base).abs().max() > 1e-3
    # a window outside the run, or strength 0, is the base latent too; a half window is neither
    assert torch.equal(runs.latent(xl(("cl.safetensors", 1.0, 1.0, 1.0))), base)
    late = runs.latent(xl(("cl.safetensors", 1.0, 0.5, 1.0), steps=3))
    assert not torch.equal(late, runs.latent(xl(steps=3))) and not torch.equal(late, runs.latent(xl(GUIDED, steps=3)))
    # chained after a second Control-LoRA: both add up
    two = runs.latent(xl(GUIDED, ("cl.safetensors", 0.5, 0.0, 1.0)))
    assert (two - guided).abs().max() > 1e-3


def test_a_lora_patched_model_builds_from_its_patched_weights(runs, tiny_checkpoints):
    """As ComfyUI (whose pre_run copies the patched diffusion model's weights): LoraLoader's
    changes to the UNet are in the Control-LoRA's network too."""
    guided = runs.latent(xl(GUIDED))
    lora_base = runs.latent(xl(lora=True))
    lora_guided = runs.latent(xl(GUIDED, lora=True))
    assert (lora_guided - lora_base).abs().max() > 1e-3
    assert (lora_guided - guided).abs().max() > 1e-3
    patched, handle = runs.output("l"), runs.output("c0")
    plain = runs.output("1")
    sdxl = tiny_checkpoints.models["sdxl"]
    lora = random_lora(sdxl.unet, [], seed=11)
    _, changes = make_control_lora(sdxl.unet, "sdxl", seed=3)
    truth = ground_truth(merge_by_hand(sdxl.unet, lora.unet), changes)
    unpatched = ground_truth(sdxl.unet, changes)
    built = build_network(handle.model, patched)
    inputs = _inputs(sdxl.unet, "sdxl")
    with torch.no_grad():
        got, want, without = theirs(built, inputs), theirs(truth, inputs), theirs(unpatched, inputs)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # the first residual is conv_in's, which the LoRA leaves; from the first LoRA'd block on they differ
    assert torch.equal(got[0], without[0])
    assert all((a - c).abs().max() > 1e-3 for a, c in zip(got[1:], without[1:], strict=True))
    # the loaded (unpatched) model still builds the unpatched network: nothing was changed in place
    rebuilt, expected = build_network(handle.model, plain).state_dict(), unpatched.state_dict()
    assert set(rebuilt) == set(expected) and all(torch.equal(rebuilt[k], expected[k]) for k in expected)


def test_an_sd1_model_gets_the_family_error(runs):
    checked = prepare(workflow(GUIDED, ckpt="base.safetensors"), runs.registry, ["5"], runtime=runs.runtime)
    result = runs.executor.execute(checked.plan)
    assert result.status == "error"
    assert "a ControlNet for sdxl (cl.safetensors) cannot guide a sd1 model" in str(result.error)


def test_a_full_size_sdxl_control_lora_builds_from_an_sdxl_unet():
    """The layout of Stability AI's SDXL files at full size, rank 128, on the meta device
    (no memory): every Linear/Conv2d weight the UNet has as an up/down pair, every other
    tensor whole. Recognised as SDXL, every key placed, the network SDXL's ControlNet."""
    from diffusers import UNet2DConditionModel

    from nodes.controlnet.control_lora import control_lora_family
    from nodes.controlnet.keymap import controlnet_key_map
    from nodes.controlnet.structure import ldm_hint_encoder
    from nodes.models.family_config import bundled_configs

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(bundled_configs("sdxl").unet)
        reference = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    ldm = controlnet_key_map(reference.state_dict().keys(), reference.config)
    full, pairs, shapes = {}, {}, {"lora_controlnet": (0,)}
    for key, tensor in reference.state_dict().items():
        name, layer = ldm[key].key, reference.get_submodule(key.rpartition(".")[0])
        if key.endswith(".weight") and own_part_ldm_name(key) is None and \
                isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
            tail = (1, 1) if tensor.dim() == 4 else ()
            up = torch.empty(tensor.shape[0], 128, *tail, device="meta")
            down = torch.empty(128, *tensor.shape[1:], device="meta")
            pairs[name] = (up, down)
            shapes[name[:-len(".weight")] + ".up"], shapes[name[:-len(".weight")] + ".down"] = up.shape, down.shape
        else:
            full[name], shapes[name] = torch.empty(tensor.shape, device="meta"), tuple(tensor.shape)
    assert control_lora_family(shapes) == "sdxl"
    hint_channels, embedding = ldm_hint_encoder(shapes)
    assert (hint_channels, embedding) == (3, (16, 32, 96, 256))  # ComfyUI's cldm hint encoder
    assert "input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight" in pairs and "label_emb.0.0.weight" in pairs
    weights = ControlLoraWeights(full, pairs, hint_channels, embedding)
    built = build_network(weights, model_handle(unet, "sdxl", torch.float16))
    assert len(built.controlnet_down_blocks) == 9 and built.mid_block.attentions[0].transformer_blocks[9] is not None
    assert {p.dtype for p in built.parameters()} == {torch.float16}
