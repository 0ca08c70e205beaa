"""Latentgraph's built-in nodes.

Each top-level module here declares node classes for one stage (``image``, ``latent``,
``sampling``...). Subpackages (``nodes/models``, ``nodes/sampling``) are the model
plumbing those nodes share; node modules import them, and torch, lazily inside
``execute`` so that listing nodes (``/object_info``) never pays for importing torch.
"""

from __future__ import annotations

from typing import Any


def make_runtime() -> dict[str, Any]:
    """Services and the run context the CLI and server hand to the executor.

    Runs each prompt under ``torch.inference_mode`` (no autograd bookkeeping). With CUDA,
    ``device_models`` keeps models within the free VRAM (``nodes.sd.memory``);
    ``empty_cache`` returns unused CUDA memory after POST /free.
    """
    import torch

    from nodes.sd.memory import DeviceModels, empty_device_cache

    services: dict[str, Any] = {"empty_cache": empty_device_cache}
    if torch.cuda.is_available():
        services["device_models"] = DeviceModels("cuda")
    return {"services": services, "run_context": torch.inference_mode}
