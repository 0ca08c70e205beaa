"""Bundled architecture configs per family, and the metadata override.

``nodes/models/configs/<name>/`` holds diffusers/transformers configs for each supported
family: ``sd1``, ``sd2`` (eps, 512), ``sd2_v`` (v-prediction, 768), ``sdxl`` (base). Files:
``unet.json``, ``vae.json``, ``text_encoder.json`` (+ ``text_encoder_2.json`` for SDXL),
``scheduler.json``.

A checkpoint may carry its own architecture in the safetensors metadata under
``latentgraph.config`` (the house model and the tiny test models do), as a JSON object with
any of ``unet``, ``vae``, ``text_encoders`` (a list, one config per encoder, in order) and
``scheduler``; parts it gives replace the bundled ones, parts it omits come from the
bundled family config.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
CONFIG_NAMES = ("sd1", "sd2", "sd2_v", "sdxl")
VAE_SCALE_FACTORS = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025}


@dataclass(frozen=True)
class FamilyConfigs:
    """Configs to build one checkpoint's models: plain dicts as diffusers/transformers take them."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoders: tuple[dict[str, Any], ...]
    scheduler: dict[str, Any]


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def bundled_configs(config_name: str, root: Path = CONFIG_ROOT) -> FamilyConfigs:
    """Read the bundled configs of ``config_name`` (one of ``CONFIG_NAMES``)."""
    if config_name not in CONFIG_NAMES:
        raise ValueError(f"unknown config {config_name!r}; expected one of {CONFIG_NAMES}")
    folder = root / config_name
    encoders = [_read(folder / "text_encoder.json")]
    if (folder / "text_encoder_2.json").exists():
        encoders.append(_read(folder / "text_encoder_2.json"))
    return FamilyConfigs(
        unet=_read(folder / "unet.json"),
        vae=_read(folder / "vae.json"),
        text_encoders=tuple(encoders),
        scheduler=_read(folder / "scheduler.json"),
    )


def resolve_configs(
    config_name: str,
    arch_config: Mapping[str, Any] | None = None,
    in_channels: int | None = None,
    prediction_type: str | None = None,
    root: Path = CONFIG_ROOT,
) -> FamilyConfigs:
    """Configs for a detected checkpoint: bundled ones (from ``root``), overridden by ``arch_config`` parts.

    ``in_channels`` (from the file's ``conv_in``; 9 for inpainting) replaces the UNet's when
    given. ``prediction_type`` is written into the scheduler config.
    """
    base = bundled_configs(config_name, root)
    arch = dict(arch_config or {})
    unet = copy.deepcopy(arch.get("unet") or base.unet)
    vae = copy.deepcopy(arch.get("vae") or base.vae)
    encoders = tuple(copy.deepcopy(arch.get("text_encoders") or base.text_encoders))
    scheduler = copy.deepcopy(arch.get("scheduler") or base.scheduler)
    if len(encoders) != len(base.text_encoders):
        raise ValueError(
            f"metadata config has {len(encoders)} text encoders; {config_name} needs {len(base.text_encoders)}"
        )
    if in_channels is not None:
        unet["in_channels"] = in_channels
    if prediction_type is not None:
        scheduler["prediction_type"] = prediction_type
    return FamilyConfigs(unet=unet, vae=vae, text_encoders=encoders, scheduler=scheduler)
