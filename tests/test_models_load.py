"""Tiny checkpoints load through the real loader, keep their weights exactly, and run."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nodes.models.bundle import LoadedCheckpoint
from nodes.models.errors import ModelLoadError
from nodes.models.ldm_writer import ldm_state_dict
from nodes.models.loader import load_checkpoint, load_vae
from nodes.models.tokenizers import bundled_clip_tokenizer

pytest_plugins = ["tests.fixtures.tiny_models"]

NAMES = ("sd1", "sd2_v", "sdxl")


@pytest.fixture(scope="module")
def loaded(tiny_checkpoints) -> dict[str, LoadedCheckpoint]:
    return {name: load_checkpoint(getattr(tiny_checkpoints, name)) for name in NAMES}


def _assert_same_state(model: torch.nn.Module, original: torch.nn.Module) -> None:
    """Every tensor equal, after casting the original to the loaded dtype (a lossless check for fp32)."""
    got, want = model.state_dict(), original.state_dict()
    assert got.keys() == want.keys()
    for key, tensor in want.items():
        assert torch.equal(got[key], tensor.to(got[key].dtype)), key


@pytest.mark.parametrize("name", NAMES)
def test_weights_identical_to_source_models(tiny_checkpoints, loaded, name):
    ckpt, original = loaded[name], tiny_checkpoints.models[name]
    _assert_same_state(ckpt.unet, original.unet)
    _assert_same_state(ckpt.vae, original.vae)
    assert len(ckpt.text_encoders) == len(original.text_encoders)
    for enc, orig in zip(ckpt.text_encoders, original.text_encoders, strict=True):
        assert type(enc) is type(orig)
        _assert_same_state(enc, orig)


@pytest.mark.parametrize("name", NAMES)
def test_ldm_round_trip_is_exact(tiny_checkpoints, loaded, name):
    """LDM file -> diffusers models -> LDM tensors gives back every tensor of the file unchanged."""
    ckpt = loaded[name]
    rewritten = ldm_state_dict(ckpt.family, ckpt.unet, ckpt.vae, ckpt.text_encoders)
    with safe_open(str(getattr(tiny_checkpoints, name)), framework="pt") as f:
        assert set(f.keys()) == set(rewritten)
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), rewritten[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_text_encoders_run_on_a_prompt(tiny_checkpoints, loaded, name):
    ckpt = loaded[name]
    for tok, enc, orig in zip(
        ckpt.tokenizers, ckpt.text_encoders, tiny_checkpoints.models[name].text_encoders, strict=True
    ):
        ids = tok(
            "a red circle", padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        assert ids.shape == (1, 77)
        out = enc(ids, output_hidden_states=True)
        assert out.last_hidden_state.shape == (1, 77, 32)
        assert torch.isfinite(out.last_hidden_state).all()
        assert torch.equal(out.last_hidden_state, orig(ids).last_hidden_state)
        if hasattr(out, "text_embeds"):
            assert out.text_embeds.shape == (1, 32)


def _unet_inputs(ckpt: LoadedCheckpoint) -> dict:
    context_dim = ckpt.unet.config.cross_attention_dim
    gen = torch.Generator().manual_seed(0)
    kwargs = {
        "sample": torch.randn(2, 4, 8, 8, generator=gen),
        "timestep": torch.tensor(500),
        "encoder_hidden_states": torch.randn(2, 77, context_dim, generator=gen),
    }
    if ckpt.family == "sdxl":
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, 32, generator=gen),
            "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2),
        }
    return kwargs


@pytest.mark.parametrize("name", NAMES)
def test_unet_forward(tiny_checkpoints, loaded, name):
    ckpt = loaded[name]
    inputs = _unet_inputs(ckpt)
    with torch.inference_mode():
        out = ckpt.unet(**inputs).sample
        want = tiny_checkpoints.models[name].unet(**inputs).sample
    assert out.shape == (2, 4, 8, 8)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, want, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_vae_round_trip_shapes(loaded, name):
    vae = loaded[name].vae
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        latent = vae.encode(image).latent_dist.mean
        decoded = vae.decode(latent).sample
    assert latent.shape == (1, 4, 8, 8)
    assert decoded.shape == (1, 3, 64, 64)
    assert torch.isfinite(decoded).all()


@pytest.mark.parametrize(
    ("name", "family", "prediction", "scale", "layouts"),
    [
        ("sd1", "sd1", "epsilon", 0.18215, ("hf",)),
        ("sd2_v", "sd2", "v_prediction", 0.18215, ("open_clip",)),
        ("sdxl", "sdxl", "epsilon", 0.13025, ("hf", "open_clip")),
    ],
)
def test_bundle_fields(loaded, name, family, prediction, scale, layouts):
    ckpt = loaded[name]
    assert ckpt.family == family
    assert ckpt.prediction_type == prediction == ckpt.scheduler_config["prediction_type"]
    assert ckpt.vae_scale_factor == pytest.approx(scale)
    assert ckpt.text_encoder_layouts == layouts
    assert ckpt.scheduler_config["beta_schedule"] == "scaled_linear"
    assert ckpt.in_channels == 4
    pads = [tok.pad_token_id for tok in ckpt.tokenizers]
    assert pads == [49407 if lay == "hf" else 0 for lay in layouts]
    for module in (ckpt.unet, ckpt.vae, *ckpt.text_encoders):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())


def test_prediction_override_at_load(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints.sd2_v, prediction_type="epsilon")
    assert ckpt.prediction_type == "epsilon" == ckpt.scheduler_config["prediction_type"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_loads_straight_to_dtype(tiny_checkpoints, dtype):
    ckpt = load_checkpoint(tiny_checkpoints.sdxl, dtype=dtype)
    for module in (ckpt.unet, ckpt.vae, *ckpt.text_encoders):
        assert {p.dtype for p in module.parameters()} == {dtype}
        assert {p.device.type for p in module.parameters()} == {"cpu"}
    buffers = dict(ckpt.text_encoders[0].named_buffers())
    position_ids = next(b for k, b in buffers.items() if k.endswith("embeddings.position_ids"))
    assert position_ids.dtype == torch.int64 and position_ids.shape == (1, 77)
    assert ckpt.dtype == dtype


def test_diffusers_folder(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints.diffusers_sd1)
    original = tiny_checkpoints.models["sd1"]
    assert (ckpt.family, ckpt.prediction_type, ckpt.text_encoder_layouts) == ("sd1", "epsilon", ("hf",))
    _assert_same_state(ckpt.unet, original.unet)
    _assert_same_state(ckpt.vae, original.vae)
    _assert_same_state(ckpt.text_encoders[0], original.text_encoders[0])
    ids = ckpt.tokenizers[0]("a red circle").input_ids  # bundled fallback: no tokenizer/ folder
    assert ids == [49406, 320, 736, 7117, 49407]


def test_standalone_vae(tiny_checkpoints):
    vae = load_vae(tiny_checkpoints.vae, dtype=torch.float16)
    original = tiny_checkpoints.models["sd1"].vae
    assert {p.dtype for p in vae.parameters()} == {torch.float16}
    _assert_same_state(vae, original)


def test_vae_from_a_full_checkpoint_file(tiny_checkpoints):
    # VAELoader pointed at a checkpoint (first_stage_model.* keys) gets its VAE; the
    # architecture comes from the file's metadata.
    vae = load_vae(tiny_checkpoints.sdxl)
    _assert_same_state(vae, tiny_checkpoints.models["sdxl"].vae)


@pytest.mark.parametrize(
    ("name", "family", "prediction"),
    [("sd1", "sd1", "epsilon"), ("sd2_v", "sd2", "v_prediction"), ("sdxl", "sdxl", "epsilon")],
)
def test_file_without_metadata_uses_family_config(tiny_checkpoints, name, family, prediction):
    """No architecture in the file: the family config folder decides (here a tiny stand-in)."""
    path = tiny_checkpoints.plain[name]
    ckpt = load_checkpoint(path, config_root=tiny_checkpoints.config_root)
    assert ckpt.info.arch_config is None
    assert (ckpt.family, ckpt.prediction_type) == (family, prediction)
    original = tiny_checkpoints.models[name]
    _assert_same_state(ckpt.unet, original.unet)
    for enc, orig in zip(ckpt.text_encoders, original.text_encoders, strict=True):
        _assert_same_state(enc, orig)
    # The real bundled configs are full size: the tiny weights do not fit them.
    with pytest.raises(ModelLoadError):
        load_checkpoint(path)


def test_old_hf_clip_layout_loads(tiny_checkpoints, tmp_path):
    """SD1 files from before transformers' ``text_model`` level load the same encoder."""
    with safe_open(str(tiny_checkpoints.sd1), framework="pt") as f:
        meta = f.metadata()
        state = {k.replace("transformer.text_model.", "transformer."): f.get_tensor(k) for k in f.keys()}
    path = tmp_path / "old_layout.safetensors"
    save_file(state, str(path), metadata=meta)
    ckpt = load_checkpoint(path)
    _assert_same_state(ckpt.text_encoders[0], tiny_checkpoints.models["sd1"].text_encoders[0])


def test_sharded_diffusers_folder(tiny_checkpoints, tmp_path):
    """Sharded weights (``*.safetensors.index.json``) and a tokenizer folder are honoured."""
    original = tiny_checkpoints.models["sdxl"]
    root = tmp_path / "sharded_sdxl"
    original.unet.save_pretrained(root / "unet", max_shard_size="200KB")
    original.vae.save_pretrained(root / "vae")
    original.text_encoders[0].save_pretrained(root / "text_encoder", max_shard_size="1MB")
    original.text_encoders[1].save_pretrained(root / "text_encoder_2")
    assert len(list((root / "unet").glob("*.safetensors"))) > 1
    # A folder tokenizer wins over the bundled one: this one pads with <|endoftext|>, where
    # the bundled OpenCLIP tokenizer would pad with id 0.
    bundled_clip_tokenizer("hf").save_pretrained(root / "tokenizer_2")
    ckpt = load_checkpoint(root, prediction_type="v")
    assert (ckpt.family, ckpt.prediction_type) == ("sdxl", "v_prediction")
    assert ckpt.text_encoder_layouts == ("hf", "open_clip")
    _assert_same_state(ckpt.unet, original.unet)
    for enc, orig in zip(ckpt.text_encoders, original.text_encoders, strict=True):
        assert type(enc) is type(orig)
        _assert_same_state(enc, orig)
    assert [t.pad_token_id for t in ckpt.tokenizers] == [49407, 49407]
    assert ckpt.tokenizers[1].model_max_length == 77
