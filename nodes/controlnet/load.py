"""Load ControlNets offline: LDM single files, diffusers single files and diffusers folders.

A union ControlNet (ControlNet++, diffusers layout) goes into a diffusers
``ControlNetUnionModel`` (``nodes.controlnet.union``); a Control-LoRA (``lora_controlnet``
key) keeps its tensors until sampling builds its network (``nodes.controlnet.control_lora``). Nothing here reads the network: the architecture comes from the file's metadata, a
``config.json`` beside it, or its structure (``nodes.controlnet.structure``). Tensors are
read as checkpoints' are (``nodes.models.state_source``: safetensors memory-mapped,
pickles only through ``torch.load(weights_only=True)``) into a diffusers
``ControlNetModel`` built on the meta device (``nodes.models.build``).

A "diff" ControlNet (a ``difference`` key in an LDM file) stores each weight it shares with
the UNet as the difference to that UNet's; :func:`load_controlnet` adds the given
``base_unet``'s weights back (DiffControlNetLoader), as ComfyUI does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nodes.controlnet.adapter import is_adapter, load_adapter
from nodes.controlnet.control_lora import is_control_lora, load_control_lora
from nodes.controlnet.handle import ControlNetHandle
from nodes.controlnet.hint_encoding import accept_encoded_hints
from nodes.controlnet.keymap import controlnet_key_map
from nodes.controlnet.structure import ControlNetInfo, inspect_controlnet
from nodes.models import build, cast_weights
from nodes.models.errors import ModelLoadError
from nodes.models.family_config import CONFIG_ROOT
from nodes.models.keymap import KeyMap, KeySource, gather, with_prefix
from nodes.models.keymap_unet import unet_key_map
from nodes.models.side_config import sibling_config
from nodes.models.state_source import StateSource, open_state

FOLDER_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                  "diffusion_pytorch_model.bin")


def empty_controlnet(config: dict[str, Any], union: bool = False) -> torch.nn.Module:
    """A diffusers ``ControlNetModel`` (``ControlNetUnionModel`` for a ``union`` one) with
    meta tensors, from its config dict."""
    from diffusers import ControlNetModel, ControlNetUnionModel

    with torch.device("meta"):
        return (ControlNetUnionModel if union else ControlNetModel).from_config(dict(config))


def _weights_of(path: Path) -> Path:
    """The weights file of a ControlNet path: the file itself, or a diffusers folder's weights."""
    if not path.is_dir():
        return path
    for name in FOLDER_WEIGHTS:
        if (path / name).is_file():
            return path / name
    raise ModelLoadError(f"{path.name}: a folder without ControlNet weights ({', '.join(FOLDER_WEIGHTS)})")


def _base_unet_tensors(base_unet: Any) -> dict[str, torch.Tensor]:
    """The weights of a diffusers UNet by their LDM key (no prefix), for diff ControlNets."""
    state = base_unet.state_dict()
    mapping = unet_key_map(state.keys(), base_unet.config)
    return {source.key: state[target] for target, source in mapping.items()}


def _key_map(model: torch.nn.Module, info: ControlNetInfo) -> KeyMap:
    keys = model.state_dict().keys()
    if info.layout == "diffusers":
        return {k: KeySource(k) for k in keys}
    return with_prefix(controlnet_key_map(keys, info.config), info.prefix)


def _read(model: torch.nn.Module, key_map: KeyMap, source: StateSource, info: ControlNetInfo,
          dtype: torch.dtype, keep_narrow: bool, base_unet: Any) -> dict[str, torch.Tensor]:
    base = _base_unet_tensors(base_unet) if info.is_diff else {}
    narrow = {key_map[k].key for k in cast_weights.keep_narrow_keys(model) if k in key_map} \
        if keep_narrow and not info.is_diff else set()

    def read(key: str) -> torch.Tensor:
        tensor = source.read(key, dtype, keep_narrow=key in narrow)
        unet_key = key[len(info.prefix):]
        if unet_key in base:  # a diff ControlNet: this weight is stored relative to the UNet's
            tensor = tensor + base[unet_key].to(tensor.device, tensor.dtype)
        return tensor

    try:
        return gather(key_map, read)
    except KeyError as exc:
        raise ModelLoadError(f"ControlNet: the file lacks tensor {exc.args[0]!r}") from exc


def load_controlnet(path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                    keep_file_precision: bool = True, base_unet: Any = None,
                    global_average_pooling: bool | None = None, config_root: Path = CONFIG_ROOT) -> ControlNetHandle:
    """Loads a ControlNet file or diffusers folder into a :class:`ControlNetHandle` (a
    T2I-Adapter file too: ``nodes.controlnet.adapter``, recognised by its keys).

    ``path``: an LDM (``control_model.*``) or diffusers-keyed ``.safetensors`` (a union
    ControlNet's too: a handle of kind ``"union"``; a Control-LoRA: kind ``"control_lora"``,
    ``base_unet`` ignored, as ComfyUI does) (or a pickle
    ``torch.load(weights_only=True)`` accepts), or a folder with ``config.json`` and
    ``diffusion_pytorch_model.safetensors``. ``dtype``: what it computes in; with
    ``keep_file_precision`` its weight matrices keep a narrower stored dtype (cast per layer).
    ``base_unet``: the diffusers UNet a diff ControlNet's differences are added to (required
    for one, refused for others' sake: ignored when the file is not a diff). ``config_root``:
    the per-family configs for what the structure cannot show (the bundled ones by default).
    ``global_average_pooling``: average each residual over the image (shuffle ControlNets);
    None decides as ComfyUI does, by a file name ending in ``_shuffle`` or ``_shuffle_fp16``.
    Raises ``UnknownCheckpointError`` for a file that is not a supported ControlNet,
    ``UnsafeFormatError`` for refused formats, ``ModelLoadError`` for missing tensors or a
    diff ControlNet without its model.
    """
    path = Path(path)
    weights = _weights_of(path)
    folder_config = sibling_config(weights, ("ControlNetModel", "ControlNetUnionModel"))
    with open_state(weights, device, dtype) as source:
        adapter = is_adapter(source.shapes)
        if is_control_lora(source.shapes):  # no network of its own: built from the sampled model
            return load_control_lora(source, path, device, dtype)
    if adapter:
        return load_adapter(weights, device=device, dtype=dtype)
    with open_state(weights, device, dtype) as source:
        info = inspect_controlnet(source.shapes, source.metadata, folder_config, path.name, config_root)
        if info.is_diff and base_unet is None:
            raise ModelLoadError(f"{path.name} is a diff ControlNet (its weights are differences to a model's): "
                                 f"load it with DiffControlNetLoader, which adds them to the model's")
        model = empty_controlnet(info.config, union=info.union)
        key_map = _key_map(model, info)
        state = _read(model, key_map, source, info, dtype, keep_file_precision, base_unet)
        model = build.fill(model, state, source.device, dtype)
    if not info.union:
        accept_encoded_hints(model)  # sampling encodes each hint once, not on every step
    if global_average_pooling is None:
        global_average_pooling = path.stem.endswith(("_shuffle", "_shuffle_fp16"))
    if global_average_pooling:
        model.register_to_config(global_pool_conditions=True)
    return ControlNetHandle(model=model, family=info.family, device=torch.device(device), dtype=dtype, source=path,
                            hint_channels=int(info.config.get("conditioning_channels", 3)),
                            kind="union" if info.union else "controlnet")
