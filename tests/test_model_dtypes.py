"""Per-part model dtypes (``--force-fp16``, ``--bf16-unet``, ``--fp32-vae``...) through the real
loader, on a tiny SD1 checkpoint. Loading only: sampling in bf16 on a CPU without bf16
instructions takes about a minute even at this size."""

import shutil

import torch

from graph import Executor, Folders, build_registry, prepare
from nodes.model_folders import ModelFolders

pytest_plugins = ["tests.fixtures.tiny_models"]


def test_each_part_loads_in_its_dtype(tiny_checkpoints, tmp_path):
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_checkpoints.sd1, tmp_path / "models" / "checkpoints" / "tiny.safetensors")
    services = {"folders": Folders.under(tmp_path), "models": ModelFolders(tmp_path / "models"),
                "device": torch.device("cpu"), "dtype": "bf16", "vae_dtype": "fp32"}
    document = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}}}
    checked = prepare(document, build_registry("nodes", None), ["1"], services)
    assert checked.ok, checked.response()
    executor = Executor(folders=services["folders"], services=services)
    result = executor.execute(checked.plan)
    assert result.status == "success", result.error and result.error["traceback"][-3:]
    loaded = next(entry for entry in executor.cache._entries.values() if entry.pool == "models")
    model, clip, vae = (items[0] for items in loaded.outputs)
    assert model.dtype == torch.bfloat16 and next(model.unet.parameters()).dtype == torch.bfloat16
    assert next(clip.encoders[0].parameters()).dtype == torch.bfloat16
    assert vae.dtype == torch.float32 and next(vae.vae.parameters()).dtype == torch.float32
    assert executor.cache.pool_bytes("models") > 0
