"""Key maps checked against real layouts: full-size bundled configs (meta, no memory) and
diffusers' own LDM converters as an independent oracle on the tiny files."""

from __future__ import annotations

import pytest
import torch
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file

from nodes.models import build
from nodes.models.family_config import bundled_configs, resolve_configs
from nodes.models.keymap_clip import hf_clip_key_map, open_clip_key_map
from nodes.models.keymap_unet import unet_key_map
from nodes.models.keymap_vae import vae_key_map
from nodes.models.loader import load_checkpoint

pytest_plugins = ["tests.fixtures.tiny_models"]


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "unet_params", "unet_keys", "encoder_params"),
    [
        ("sd1", 859_520_964, 686, [123_060_480]),
        ("sd2", 865_910_724, 686, [340_387_840]),
        ("sd2_v", 865_910_724, 686, [340_387_840]),
        ("sdxl", 2_567_463_684, 1680, [123_060_480, 694_659_840]),
    ],
)
def test_bundled_configs_match_released_models(name, unet_params, unet_keys, encoder_params):
    cfg = bundled_configs(name)
    unet = build.empty_unet(cfg.unet)
    assert _count(unet) == unet_params
    ldm = {s.key for s in unet_key_map(unet.state_dict(), cfg.unet).values()}
    assert len(ldm) == unet_keys
    assert "out.2.weight" in ldm and "input_blocks.0.0.weight" in ldm and "time_embed.2.bias" in ldm
    if name == "sdxl":
        assert {"label_emb.0.0.weight", "output_blocks.2.2.conv.weight", "input_blocks.6.0.op.weight"} <= ldm
    else:
        assert {
            "output_blocks.2.1.conv.weight",
            "output_blocks.8.2.conv.weight",
            "input_blocks.9.0.op.weight",
        } <= ldm
    vae = build.empty_vae(cfg.vae)
    assert _count(vae) == 83_653_863
    vae_keys = {s.key for s in vae_key_map(vae.state_dict(), cfg.vae).values()}
    assert len(vae_keys) == 248
    assert {
        "decoder.up.3.upsample.conv.weight",
        "encoder.mid.attn_1.q.weight",
        "decoder.norm_out.bias",
    } <= vae_keys
    encoders = [build.empty_text_encoder(c) for c in cfg.text_encoders]
    assert [_count(e) for e in encoders] == encoder_params
    assert cfg.scheduler["beta_start"] == 0.00085 and cfg.scheduler["beta_end"] == 0.012


def test_open_clip_layout_of_full_size_encoder():
    enc = build.empty_text_encoder(bundled_configs("sdxl").text_encoders[1])
    sources = open_clip_key_map(enc.state_dict())
    keys = {s.key for s in sources.values()}
    assert "transformer.resblocks.31.attn.in_proj_weight" in keys
    assert "text_projection" in keys and "positional_embedding" in keys
    assert not any("resblocks.32." in k for k in keys)
    assert len(keys) == 32 * 12 + 5  # 12 tensors per resblock (fused qkv) + 5 others
    hf = {
        s.key
        for s in hf_clip_key_map(
            build.empty_text_encoder(bundled_configs("sd1").text_encoders[0]).state_dict()
        ).values()
    }
    assert "embeddings.token_embedding.weight" in hf and "final_layer_norm.bias" in hf
    assert not any(k.startswith("text_model.") for k in hf)


def test_inpainting_channels_reach_the_unet_config():
    assert resolve_configs("sd1", None, in_channels=9).unet["in_channels"] == 9


def _strip_text_model(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("text_model."): v for k, v in state.items()}


@pytest.mark.parametrize("name", ["sd1", "sd2_v", "sdxl"])
def test_agrees_with_diffusers_converters(tiny_checkpoints, name):
    """Our key conversion gives exactly what diffusers' LDM converters give."""
    path = getattr(tiny_checkpoints, name)
    ckpt = load_checkpoint(path)
    raw = load_file(str(path))
    unet = sfu.convert_ldm_unet_checkpoint(raw, dict(ckpt.unet.config))
    vae = sfu.convert_ldm_vae_checkpoint(raw, dict(ckpt.vae.config))
    for ours, theirs in ((ckpt.unet.state_dict(), unet), (ckpt.vae.state_dict(), vae)):
        assert ours.keys() == theirs.keys()
        for key, tensor in ours.items():
            assert torch.equal(tensor, theirs[key].reshape(tensor.shape)), key
    for layout, enc in zip(ckpt.info.text_encoders, ckpt.text_encoders, strict=True):
        if layout.layout == "hf":
            theirs = sfu.convert_ldm_clip_checkpoint(
                raw, remove_prefix=layout.prefix.removesuffix("text_model.")
            )
        else:
            theirs = sfu.convert_open_clip_checkpoint(enc, raw, prefix=layout.prefix)
        theirs = _strip_text_model(theirs)
        ours = _strip_text_model(enc.state_dict())
        assert ours.keys() <= theirs.keys()
        for key, tensor in ours.items():
            assert torch.equal(tensor, theirs[key]), key
