"""Per-part model dtypes (``--force-fp16``, ``--bf16-unet``, ``--fp32-vae``, ``--fp16-text-enc``...)
through the real loader, on a tiny SD1 checkpoint. Loading only, except one prompt encoded
by a half-precision text encoder: sampling in bf16 on a CPU without bf16 instructions takes
about a minute even at this size."""

import shutil
from types import SimpleNamespace

import pytest
import torch

from graph import Executor, Folders, build_registry, prepare
from graph.cli import _parser as cli_parser
from latentgraph_server.config import config_from_args
from nodes.models.folders import ModelFolders
from nodes.sd.runtime import DeviceSettings, Runtime
from nodes.sd.runtime_flags import device_settings

pytest_plugins = ["tests.fixtures.tiny_models"]


@pytest.fixture(scope="module")
def model_root(tiny_checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("dtypes")
    (root / "models" / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_checkpoints.sd1, root / "models" / "checkpoints" / "tiny.safetensors")
    return root


def load(root, document=None, **dtype_settings):
    """Runs ``document`` (default: just the checkpoint loader, node "1") with the given dtype
    runtime; returns the executor and the loader's (MODEL, CLIP, VAE)."""
    runtime = Runtime(folders=Folders.under(root), models=ModelFolders(root / "models"), settings=DeviceSettings(device="cpu", **dtype_settings))
    document = document or {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}}}
    checked = prepare(document, build_registry("nodes", None), list(document), runtime)
    assert checked.ok, checked.response()
    executor = Executor(folders=runtime.folders, runtime=runtime)
    result = executor.execute(checked.plan)
    assert result.status == "success", result.error and result.error["traceback"][-3:]
    loaded = next(entry for entry in executor.cache._entries.values() if entry.pool == "models")
    return executor, tuple(items[0] for items in loaded.outputs)


def test_each_part_loads_in_its_dtype(model_root):
    executor, (model, clip, vae) = load(model_root, dtype="bf16", vae_dtype="fp32")
    assert model.dtype == torch.bfloat16 and next(model.unet.parameters()).dtype == torch.bfloat16
    assert next(clip.encoders[0].parameters()).dtype == torch.bfloat16
    assert vae.dtype == torch.float32 and next(vae.vae.parameters()).dtype == torch.float32
    assert executor.cache.pool_bytes("models") > 0


@pytest.mark.parametrize(("flag", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_text_encoder_follows_its_flag_and_nothing_else_does(model_root, flag, dtype):
    other, other_dtype = ("fp16", torch.float16) if flag == "fp32" else ("fp32", torch.float32)
    _, (model, clip, vae) = load(model_root, dtype=other, text_enc_dtype=flag)
    assert {p.dtype for p in clip.encoders[0].parameters()} == {dtype}
    assert model.dtype == vae.dtype == other_dtype
    assert {p.dtype for p in model.unet.parameters()} == {p.dtype for p in vae.vae.parameters()} == {other_dtype}


def test_fp16_text_encoder_on_the_cpu_encodes_a_prompt(model_root):
    # fp16 is allowed on the CPU, as for the UNet and VAE flags; the conditioning comes back in fp32.
    document = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
                "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}}}
    executor, (model, clip, _) = load(model_root, document, text_enc_dtype="fp16")
    assert next(clip.encoders[0].parameters()).dtype == torch.float16
    assert next(model.unet.parameters()).dtype == torch.float32  # default on the CPU
    cond = next(entry.outputs[0][0] for entry in executor.cache._entries.values() if entry.pool != "models")
    embedding = cond[0][0]
    assert embedding.dtype == torch.float32 and embedding.shape[:2] == (1, 77) and torch.isfinite(embedding).all()


def test_text_encoder_dtype_settings():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    def part_dtypes(device, **settings):
        return Runtime(settings=DeviceSettings(**settings)).part_dtypes(device)

    assert part_dtypes(cpu, text_enc_dtype="bf16") == {"unet": torch.float32, "vae": torch.float32,
                                                       "text": torch.bfloat16}
    assert part_dtypes(cuda, dtype="fp16", text_enc_dtype="fp32")["text"] == torch.float32
    assert part_dtypes(cuda)["text"] == torch.float16  # unset: as before, the runtime's default


def test_text_encoder_flags_of_the_cli_and_the_server():
    for name in ("fp32", "fp16", "bf16"):
        args = cli_parser().parse_args(["run", "w.json", f"--{name}-text-enc"])
        assert device_settings(args) == DeviceSettings(text_enc_dtype=name)
        assert config_from_args([f"--{name}-text-enc"]).device_settings == DeviceSettings(text_enc_dtype=name)
    args = cli_parser().parse_args(["run", "w.json", "--force-fp16", "--bf16-unet", "--fp32-text-enc"])
    assert device_settings(args) == DeviceSettings(dtype="fp16", unet_dtype="bf16", text_enc_dtype="fp32")
    with pytest.raises(SystemExit):  # one text-encoder dtype at a time, like the others
        cli_parser().parse_args(["run", "w.json", "--fp16-text-enc", "--bf16-text-enc"])
    with pytest.raises(SystemExit):
        config_from_args(["--fp32-text-enc", "--fp16-text-enc"])


def test_other_models_keep_the_runtime_dtype_whatever_the_part_flags():
    from nodes.loaders import runtime_device

    settings = DeviceSettings(device="cpu", dtype="bf16", text_enc_dtype="fp16", unet_dtype="fp32")
    context = SimpleNamespace(runtime=Runtime(settings=settings))
    assert runtime_device(context) == (torch.device("cpu"), torch.bfloat16)  # e.g. upscale models
