"""Plain-read safetensors tensors equal what safetensors itself returns."""

from __future__ import annotations

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nodes.models.safetensors_direct import ConvertingReader, read_index, read_tensor
from nodes.models.state_source import open_state


def test_direct_reads_match_safetensors(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 5, generator=gen),
        "f16": torch.randn(7, generator=gen).half(),
        "bf16": torch.randn(2, 2, 2, generator=gen).bfloat16(),
        "i64": torch.arange(77)[None],
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(2.5),
    }
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path), metadata={"a": "b"})
    with open(path, "rb") as fh:
        index = read_index(fh)
        assert set(index) == set(tensors)
        with safe_open(str(path), framework="pt") as f:
            for name in tensors:
                got = read_tensor(fh, index[name])
                assert got.dtype == tensors[name].dtype and got.shape == tensors[name].shape
                assert torch.equal(got, f.get_tensor(name)), name


def test_state_source_converts_floats_only(tmp_path):
    path = tmp_path / "t.safetensors"
    w = torch.randn(4, 4)
    save_file({"w": w, "h": w.half(), "ids": torch.arange(3)}, str(path))
    with open_state(path, dtype=torch.bfloat16) as src:
        assert torch.equal(src.read("w"), w.bfloat16())
        assert torch.equal(src.read("h"), w.half().bfloat16())
        assert src.read("ids").dtype == torch.int64
    with open_state(path, dtype=torch.float32) as src:
        assert torch.equal(src.read("w"), w)
        assert src.read("h").dtype == torch.float32


def test_converting_reader_equals_read_then_convert(tmp_path):
    gen = torch.Generator().manual_seed(1)
    tensors = {"small": torch.randn(3, generator=gen).half(), "big": torch.randn(64, 33, generator=gen).half(),
               "after_big": torch.randn(5, 2, generator=gen).bfloat16(), "empty": torch.zeros(0, 4).half(),
               "scalar": torch.tensor(1.5).half()}
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path))
    with open(path, "rb") as fh:
        index = read_index(fh)
        reader = ConvertingReader(fh)
        for name in ("small", "big", "after_big", "empty", "scalar", "small"):  # the buffer grows, then is reused
            got = reader.read(index[name], torch.float32)
            assert got.dtype == torch.float32 and torch.equal(got, tensors[name].float()), name


def test_keep_narrow_keeps_only_a_narrower_stored_dtype(tmp_path):
    """``keep_narrow``: an fp16 tensor wanted in fp32 stays fp16 (a view of the file's mapping,
    see ``cast_weights``); a wider stored dtype is still converted down; integers never change."""
    path = tmp_path / "t.safetensors"
    w = torch.randn(4, 4)
    save_file({"w": w, "h": w.half(), "b": w.bfloat16(), "ids": torch.arange(3)}, str(path))
    with open_state(path, dtype=torch.float32) as src:
        assert src.read("h", keep_narrow=True).dtype == torch.float16
        assert torch.equal(src.read("h", keep_narrow=True), w.half())
        assert src.read("b", keep_narrow=True).dtype == torch.bfloat16
        assert src.read("h", torch.float16, keep_narrow=True).dtype == torch.float16
        assert src.read("w", torch.float16, keep_narrow=True).dtype == torch.float16
        assert src.read("h", torch.bfloat16, keep_narrow=True).dtype == torch.bfloat16  # same width: converted
        assert src.read("ids", keep_narrow=True).dtype == torch.int64
        assert src.read("h").dtype == torch.float32
