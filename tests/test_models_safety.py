"""Refused formats, safe pickles, and loading with the network blocked."""

from __future__ import annotations

import socket

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nodes.models.detect import detect
from nodes.models.errors import ModelLoadError, UnsafeFormatError
from nodes.models.ldm_writer import save_ldm_checkpoint
from nodes.models.loader import load_checkpoint, load_vae
from nodes.models.state_source import open_state

pytest_plugins = ["tests.fixtures.tiny_models"]


class NotATensor:
    """An arbitrary class: pickles holding one must be refused by weights_only loading."""

    def __init__(self) -> None:
        self.payload = "anything"


def test_pickle_with_arbitrary_object_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": NotATensor()}, str(path))
    with pytest.raises(UnsafeFormatError, match="weights_only"):
        load_checkpoint(path)


def test_plain_tensor_pickle_is_read(tiny_checkpoints, tmp_path):
    path = tmp_path / "tiny_sd1.ckpt"
    state = load_file(str(tiny_checkpoints.sd1))
    torch.save({"state_dict": state, "global_step": 7}, str(path))
    with open_state(path) as source:
        assert source.shapes == {k: tuple(v.shape) for k, v in state.items()}
        assert detect(source.shapes, source.metadata).family == "sd1"
        key = "model.diffusion_model.out.2.weight"
        assert torch.equal(source.read(key), state[key])
    ckpt = load_checkpoint(path, config_root=tiny_checkpoints.config_root)
    for key, tensor in tiny_checkpoints.models["sd1"].unet.state_dict().items():
        assert torch.equal(ckpt.unet.state_dict()[key], tensor), key
    # A pickle carries no metadata, so with the real (full-size) bundled configs the tiny
    # sizes do not fit: the loader must say so, not crash.
    with pytest.raises(ModelLoadError, match="lacks tensor|size mismatch"):
        load_checkpoint(path)


@pytest.mark.parametrize("suffix", [".onnx", ".gguf", ""])
def test_unknown_extension_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(UnsafeFormatError, match="unsupported file type"):
        load_checkpoint(path)


def test_missing_tensor_reported(tiny_checkpoints, tmp_path):
    m = tiny_checkpoints.models["sd1"]
    path = save_ldm_checkpoint(
        tmp_path / "cut.safetensors", "sd1", m.unet, m.vae, m.text_encoders, store_arch_config=True
    )
    state = load_file(str(path))
    del state["model.diffusion_model.out.2.weight"]
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file(state, str(path), metadata=meta)
    with pytest.raises(ModelLoadError, match="out.2.weight"):
        load_checkpoint(path)


def test_loading_opens_no_socket(tiny_checkpoints, monkeypatch):
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError(f"network blocked in test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(OSError, match="network blocked"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    attempts.clear()

    for path in (
        tiny_checkpoints.sd1,
        tiny_checkpoints.sd2_v,
        tiny_checkpoints.sdxl,
        tiny_checkpoints.diffusers_sd1,
    ):
        ckpt = load_checkpoint(path)
        assert ckpt.tokenizers[0]("a red circle").input_ids[:2] == [49406, 320]
    load_vae(tiny_checkpoints.vae)
    assert attempts == []
