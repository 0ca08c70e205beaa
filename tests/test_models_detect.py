"""Checkpoint family detection from headers: tiny files, edited shape maps, unknown files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from nodes.models.detect import UNET, detect, detect_file, read_header
from nodes.models.errors import UnknownCheckpointError

pytest_plugins = ["tests.fixtures.tiny_models"]


@pytest.mark.parametrize(
    ("name", "family", "config_name", "prediction", "n_encoders"),
    [
        ("sd1", "sd1", "sd1", "epsilon", 1),
        ("sd2_v", "sd2", "sd2_v", "v_prediction", 1),
        ("sdxl", "sdxl", "sdxl", "epsilon", 2),
    ],
)
def test_tiny_checkpoints_detected(tiny_checkpoints, name, family, config_name, prediction, n_encoders):
    info = detect_file(getattr(tiny_checkpoints, name))
    assert info.family == family
    assert info.config_name == config_name
    assert info.prediction_type == prediction
    assert len(info.text_encoders) == n_encoders
    assert info.in_channels == 4
    assert info.has_vae
    assert info.arch_config is not None and "unet" in info.arch_config


def test_sdxl_layout_details(tiny_checkpoints):
    info = detect_file(tiny_checkpoints.sdxl)
    assert [e.layout for e in info.text_encoders] == ["hf", "open_clip"]
    assert info.context_dim == sum(e.width for e in info.text_encoders) == 64
    assert info.adm_channels == 32 + 6 * 8


def test_sd2_prediction_hints_and_override(tiny_checkpoints):
    shapes, meta = read_header(tiny_checkpoints.sd2_v)
    meta = {k: v for k, v in meta.items()}
    assert detect(shapes, meta).prediction_source.startswith("default rule")
    eps = detect(shapes, meta | {"modelspec.prediction_type": "epsilon"})
    assert (eps.prediction_type, eps.config_name) == ("epsilon", "sd2")
    assert detect(shapes, meta, prediction_type="eps").prediction_type == "epsilon"
    assert (
        detect(shapes, meta | {"prediction_type": "epsilon"}, prediction_type="v").prediction_type
        == "v_prediction"
    )
    arch = json.loads(meta["latentgraph.config"]) | {"prediction_type": "epsilon"}
    assert detect(shapes, meta | {"latentgraph.config": json.dumps(arch)}).prediction_type == "epsilon"
    with pytest.raises(ValueError, match="unknown prediction type"):
        detect(shapes, meta, prediction_type="sample")


def test_v_pred_key_marks_sd1_as_v(tiny_checkpoints):
    shapes, meta = read_header(tiny_checkpoints.sd1)
    assert detect(shapes, meta).prediction_type == "epsilon"
    assert detect(shapes | {"v_pred": ()}, meta).prediction_type == "v_prediction"


def test_inpainting_in_channels_recorded(tiny_checkpoints):
    shapes, meta = read_header(tiny_checkpoints.sd1)
    key = UNET + "input_blocks.0.0.weight"
    shapes[key] = (shapes[key][0], 9, *shapes[key][2:])
    assert detect(shapes, meta).in_channels == 9


def test_context_width_mismatch_refused(tiny_checkpoints):
    shapes, meta = read_header(tiny_checkpoints.sd1)
    token = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    shapes[token] = (shapes[token][0], 48)
    with pytest.raises(UnknownCheckpointError, match="cross-attention width 32 does not match"):
        detect(shapes, meta)


def test_refiner_like_embedders_refused(tiny_checkpoints):
    shapes, meta = read_header(tiny_checkpoints.sdxl)
    shapes = {k: v for k, v in shapes.items() if not k.startswith("conditioner.embedders.0.")}
    with pytest.raises(UnknownCheckpointError, match="refiner"):
        detect(shapes, meta)


def test_unknown_file_error_names_what_was_found(tmp_path):
    path = tmp_path / "mystery.safetensors"
    save_file({"backbone.layer1.weight": torch.zeros(3, 5), "head.fc.bias": torch.zeros(7)}, str(path))
    with pytest.raises(UnknownCheckpointError) as err:
        detect_file(path)
    message = str(err.value)
    assert "backbone.layer1.* (1)" in message and "head.fc.* (1)" in message
    assert "2 tensors" in message


def test_vae_file_given_as_checkpoint_gets_a_hint(tiny_checkpoints):
    with pytest.raises(UnknownCheckpointError, match="standalone VAE"):
        detect_file(tiny_checkpoints.vae)


def test_old_hf_layout_without_text_model_level(tiny_checkpoints):
    shapes, meta = read_header(tiny_checkpoints.sd1)
    old = {k.replace("transformer.text_model.", "transformer."): v for k, v in shapes.items()}
    info = detect(old, meta)
    assert info.family == "sd1"
    assert info.text_encoders[0].prefix == "cond_stage_model.transformer."
    assert detect(shapes, meta).text_encoders[0].prefix == "cond_stage_model.transformer.text_model."
