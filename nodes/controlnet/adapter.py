"""T2I-Adapters: detection by structure, key maps and loading into diffusers' ``T2IAdapter``.

Two layouts are read:

* **original** (TencentARC's, what ComfyUI loads): full adapters have ``conv_in`` and a
  flat ``body.K`` of ResBlocks, ``num_res_blocks`` per level (``body.K.in_conv`` where the
  width changes, ``block1`` 3x3, ``block2`` 1x1); light adapters have one ``body.I``
  extractor per level (``in_conv``, ``body.J.block1/2``, ``out_conv``);
* **diffusers**: the same under ``adapter.``, ``body.I.resnets.J``.

The pixel-unshuffle factor comes from ``conv_in``'s input width, as in ComfyUI: 64 x
channels (8 x 8) for SD1.x adapters, 256 x channels (16 x 16) for SDXL's (``full_adapter_xl``).
Adapters with strided-conv downsamplers or skip convs (``down_opt.op``, ``skep``), which
diffusers' ``T2IAdapter`` has no place for, are refused with an error naming them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nodes.controlnet.handle import ControlNetHandle
from nodes.models import build
from nodes.models.detect import Shapes
from nodes.models.errors import ModelLoadError, UnknownCheckpointError
from nodes.models.keymap import KeyMap, KeySource, gather
from nodes.models.state_source import open_state


@dataclass(frozen=True)
class AdapterInfo:
    """What :func:`inspect_adapter` found: ``layout`` (``"original"``/``"diffusers"``),
    ``config`` (diffusers ``T2IAdapter`` arguments) and ``family`` (``"sd1"`` or ``"sdxl"``)."""

    layout: str
    config: dict[str, Any]
    family: str


def is_adapter(shapes: Shapes) -> bool:
    """Whether a file's keys are a T2I-Adapter's (either layout, full or light)."""
    return any(key in shapes for key in ("adapter.body.0.resnets.0.block1.weight", "body.0.block1.weight",
                                         "body.0.body.0.block1.weight"))


def _count(shapes: Shapes, pattern: str) -> int:
    found = re.compile(pattern)
    return len({m.group(1) for k in shapes if (m := found.match(k))})


def _unshuffle(width: int, name: str) -> tuple[int, int]:
    """conv_in's input width -> (hint channels, pixel-unshuffle factor)."""
    for factor in (16, 8):
        if width % (factor * factor) == 0 and width // (factor * factor) in (1, 3):
            return width // (factor * factor), factor
    raise UnknownCheckpointError(f"{name}: a T2I-Adapter input of {width} channels is not an unshuffled 1- or "
                                 f"3-channel image")


def inspect_adapter(shapes: Shapes, name: str = "the file") -> AdapterInfo:
    """Classifies a T2I-Adapter from its key -> shape map (see the module docstring)."""
    refused = [k for k in shapes if ".down_opt.op." in k or ".skep." in k]
    if refused:
        raise UnknownCheckpointError(f"{name} is a T2I-Adapter with strided-conv downsampling or skip convs "
                                     f"({refused[0]}), which is not supported")
    if "adapter.body.0.resnets.0.block1.weight" in shapes or "adapter.body.0.in_conv.weight" in shapes:
        layout, shapes = "diffusers", {k[len("adapter."):]: v for k, v in shapes.items() if k.startswith("adapter.")}
        light = "body.0.out_conv.weight" in shapes
        blocks = _count(shapes, r"^body\.(\d+)\.")
        rb = _count(shapes, r"^body\.0\.resnets\.(\d+)\.")
        channels = [shapes[f"body.{i}.out_conv.weight" if light else f"body.{i}.resnets.0.block1.weight"][0]
                    for i in range(blocks)]
        first = shapes["body.0.in_conv.weight" if light else "conv_in.weight"][1]
    elif "body.0.body.0.block1.weight" in shapes:
        layout, light = "original", True
        blocks, rb = _count(shapes, r"^body\.(\d+)\."), _count(shapes, r"^body\.0\.body\.(\d+)\.")
        channels = [shapes[f"body.{i}.out_conv.weight"][0] for i in range(blocks)]
        first = shapes["body.0.in_conv.weight"][1]
    elif "conv_in.weight" in shapes and "body.0.block1.weight" in shapes:
        layout, light = "original", False
        if shapes["body.0.block2.weight"][2] != 1:
            raise UnknownCheckpointError(f"{name}: a T2I-Adapter with {shapes['body.0.block2.weight'][2]}x"
                                         f"{shapes['body.0.block2.weight'][2]} second convs is not supported")
        starts = sorted(int(m.group(1)) for k in shapes if (m := re.match(r"^body\.(\d+)\.in_conv\.weight$", k)))
        total = _count(shapes, r"^body\.(\d+)\.")
        rb = starts[0] if starts else total
        channels = [shapes[f"body.{i * rb}.block1.weight"][0] for i in range(total // rb)]
        first = shapes["conv_in.weight"][1]
    else:
        raise UnknownCheckpointError(f"{name} is not a T2I-Adapter")
    hint, factor = _unshuffle(int(first), name)
    if light:
        kind = "light_adapter"
        if len(channels) < 2 or channels[-1] != channels[-2]:
            raise UnknownCheckpointError(f"{name}: a light T2I-Adapter whose last two levels differ ({channels}) "
                                         f"is not supported")
        channels = channels[:-1]  # diffusers' LightAdapter repeats its last level
    else:
        kind = "full_adapter_xl" if factor == 16 else "full_adapter"
    config = {"in_channels": hint, "channels": [int(c) for c in channels], "num_res_blocks": rb,
              "downscale_factor": factor, "adapter_type": kind}
    return AdapterInfo(layout, config, "sdxl" if factor == 16 else "sd1")


def original_key(key: str, config: dict[str, Any]) -> str:
    """The original-layout key of diffusers ``T2IAdapter`` key ``key``."""
    rest = key[len("adapter."):]
    m = re.match(r"^body\.(\d+)\.resnets\.(\d+)\.(.+)$", rest)
    if config["adapter_type"] == "light_adapter":
        return f"body.{m.group(1)}.body.{m.group(2)}.{m.group(3)}" if m else rest
    rb = config["num_res_blocks"]
    if m:
        return f"body.{int(m.group(1)) * rb + int(m.group(2))}.{m.group(3)}"
    m = re.match(r"^body\.(\d+)\.in_conv\.(.+)$", rest)
    if m:
        return f"body.{int(m.group(1)) * rb}.in_conv.{m.group(2)}"
    return rest


def adapter_key_map(target_keys: Any, info: AdapterInfo) -> KeyMap:
    if info.layout == "diffusers":
        return {k: KeySource(k) for k in target_keys}
    return {k: KeySource(original_key(k, info.config)) for k in target_keys}


def load_adapter(path: str | Path, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> ControlNetHandle:
    """Loads a T2I-Adapter file into a :class:`ControlNetHandle` of kind ``"t2i_adapter"``."""
    from diffusers import T2IAdapter

    path = Path(path)
    with open_state(path, device, dtype) as source:
        info = inspect_adapter(source.shapes, path.name)
        with torch.device("meta"):
            model = T2IAdapter(**info.config)
        key_map = adapter_key_map(model.state_dict().keys(), info)
        try:
            state = gather(key_map, lambda key: source.read(key, dtype))
        except KeyError as exc:
            raise ModelLoadError(f"T2I-Adapter: the file lacks tensor {exc.args[0]!r}") from exc
        model = build.fill(model, state, source.device, dtype)
    return ControlNetHandle(model=model, family=info.family, device=torch.device(device), dtype=dtype, source=path,
                            hint_channels=info.config["in_channels"], kind="t2i_adapter",
                            hint_multiple=info.config["downscale_factor"])
