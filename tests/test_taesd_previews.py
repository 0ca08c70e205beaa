"""TAESD previews (nodes/sampling/taesd.py, latentgraph_server/previews.py): the decoder has the
published files' layer names, loads a decoder file by name, and replaces latent2rgb only for
the latent families a decoder was found for, only while installed. No published weights are
available offline, so the decoder's weights here are random: this checks the plumbing and
the layout, not the pictures."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from latentgraph_server.previews import explain_method, install_taesd_previews, remove_taesd_previews
from nodes.sampling.latent_preview import latent_to_image
from nodes.sampling.taesd import find_decoders, load_decoder, tiny_decoder


def test_decoder_layout_matches_the_published_layer_names():
    names = set(tiny_decoder().state_dict())
    # a flat sequence: conv 1, blocks 3-5, upsample 6, bias-free conv 7, ..., last block 18, conv 19
    assert {"1.weight", "1.bias", "3.conv.0.weight", "3.conv.4.bias", "7.weight", "12.weight", "17.weight",
            "18.conv.2.weight", "19.weight", "19.bias"} <= names
    assert "7.bias" not in names and not any(name.startswith(("0.", "2.", "6.")) for name in names)
    assert sum(p.numel() for p in tiny_decoder().parameters()) == 1_222_531  # about 1.2M, as TAESD's decoder


def _random_decoder_file(folder, stem: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    weights = {name: torch.randn_like(value) * 0.05 for name, value in tiny_decoder().state_dict().items()}
    save_file(weights, str(folder / f"{stem}.safetensors"))


def test_installed_taesd_draws_previews_for_its_families_only(tmp_path):
    folder = tmp_path / "vae_approx"
    assert "no TAESD decoder" in explain_method("taesd", [folder])
    assert explain_method("none", [folder]) is None and explain_method("latent2rgb", [folder]) is None
    _random_decoder_file(folder, "taesd_decoder")
    assert set(find_decoders([folder])) == {"sd1", "sd2"}
    assert "taesd_decoder.safetensors" in explain_method("auto", [folder])
    decoder = load_decoder(folder / "taesd_decoder.safetensors")
    assert decoder(torch.zeros(1, 4, 8, 8)).shape == (1, 3, 64, 64)

    latent = torch.randn(4, 16, 16)
    assert latent_to_image(latent, "sd1").size == (16, 16)  # latent2rgb: one pixel per latent pixel
    try:
        assert install_taesd_previews([folder]) == ["sd1", "sd2"]
        assert latent_to_image(latent, "sd1").size == (128, 128)  # TAESD: the picture's own size
        assert latent_to_image(latent, "sd1", max_size=64).size == (64, 64)
        assert latent_to_image(latent, "sdxl").size == (16, 16)  # no SDXL decoder: latent2rgb
    finally:
        remove_taesd_previews()
    assert latent_to_image(latent, "sd1").size == (16, 16)
