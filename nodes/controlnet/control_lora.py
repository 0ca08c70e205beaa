"""Control-LoRA files (Stability AI's ``control-lora-canny-rank128.safetensors``,
``control-lora-depth-rank256.safetensors``...): a ControlNet stored as changes to the model
it guides, built from that model when sampling.

The format, as ComfyUI 0.3.64 reads it (its ``ControlLora``): a ``lora_controlnet`` key
marks the file; the other keys are LDM ControlNet (``cldm``) names without the
``control_model.`` prefix, of three kinds:

* ``<layer>.up`` [out, r(, 1, 1)] and ``<layer>.down`` [r, in(, kh, kw)]: a low-rank change of
  a Linear or Conv2d layer's weight, ``weight + (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)``
  computed in the dtype the model computes in (no alpha, no scale);
* ``<name>.weight`` / ``<name>.bias``: a whole tensor replacing the base's. The parts the
  UNet does not have come so: the hint encoder (``input_hint_block.*``, whose first
  convolution's input channels are the hint's), the zero convolutions (``zero_convs.*``,
  ``middle_block_out.*``); and whatever else the file holds (biases, norms);
* anything else (the marker) is ignored, as ComfyUI does.

Every other tensor of the network is the sampled model's own.

:func:`load_control_lora` keeps the file's tensors under their LDM names
(:class:`ControlLoraWeights`; which diffusers name an LDM name has depends on the UNet's
layout, known only when sampling) and tells the family from the structure.
:func:`control_lora_network` builds the network at a sampling run's first UNet call, as
ComfyUI's ``pre_run`` does for every run: a diffusers ``ControlNetModel`` with the sampled
UNet's config (``from_unet``, on the meta device), holding the UNet's weights as the model
samples them (LoRAs from LoraLoader merged in, as ComfyUI patches them), then the file's
whole tensors, then its low-rank changes; on the UNet's device, in the model's compute
dtype. The network lives in the run's cache and goes with it; weights it does not change
are the UNet's own tensors, not copies.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from nodes.controlnet.handle import ControlNetHandle
from nodes.controlnet.hint_encoding import accept_encoded_hints
from nodes.controlnet.keymap import controlnet_key_map
from nodes.controlnet.structure import CONTROL_LORA_MARK, ldm_hint_encoder
from nodes.models import build
from nodes.models.detect import Shapes
from nodes.models.errors import ModelLoadError, UnknownCheckpointError
from nodes.models.state_source import StateSource

UP, DOWN = ".up", ".down"
_READ = (UP, DOWN, ".weight", ".bias")  # ComfyUI sets these (keys without "__") and ignores the rest
_NEEDED = ("input_hint_block.0.weight", "zero_convs.0.0.weight", "middle_block_out.0.weight")
_PROJ_IN = re.compile(r"\.proj_in\.(weight|down)$")


def is_control_lora(shapes: Shapes) -> bool:
    """Whether a file's keys are a Control-LoRA's (ComfyUI's test: a ``lora_controlnet`` key)."""
    return CONTROL_LORA_MARK in shapes


def control_lora_family(shapes: Shapes, name: str = "the file") -> str:
    """``"sdxl"`` (a ``label_emb``: pooled text and size conditioning), else ``"sd2"`` or
    ``"sd1"`` by the transformers' input projection (Linear or 1x1 conv, from its weight or
    its LoRA ``down``). Raises ``UnknownCheckpointError`` when the keys show neither."""
    if any(k.startswith("label_emb.") for k in shapes):
        return "sdxl"
    for key, shape in shapes.items():
        if _PROJ_IN.search(key):
            return "sd2" if len(shape) == 2 else "sd1"
    raise UnknownCheckpointError(f"{name} is a Control-LoRA for a model family its tensors do not show "
                                 f"(no label_emb, no transformer proj_in)")


class ControlLoraWeights(torch.nn.Module):
    """The tensors of a Control-LoRA file, by LDM name: whole tensors (``full()``) and
    low-rank pairs (``pairs()``: the changed weight's LDM key -> ``(up, down)``). They are
    buffers, so that the model manager moves them with the UNet and counts their bytes.

    ``hint_channels``: the hint image's channels; ``embedding``: the hint encoder's
    convolution widths (diffusers' ``conditioning_embedding_out_channels``).
    """

    def __init__(self, full: dict[str, torch.Tensor], pairs: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 hint_channels: int, embedding: tuple[int, ...]) -> None:
        super().__init__()
        self.full_keys = list(full)
        self.pair_keys = list(pairs)
        self.hint_channels = hint_channels
        self.embedding = embedding
        for i, key in enumerate(self.full_keys):
            self.register_buffer(f"full{i}", full[key])
        for i, key in enumerate(self.pair_keys):
            self.register_buffer(f"up{i}", pairs[key][0])
            self.register_buffer(f"down{i}", pairs[key][1])

    def full(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, f"full{i}") for i, key in enumerate(self.full_keys)}

    def pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {key: (getattr(self, f"up{i}"), getattr(self, f"down{i}")) for i, key in enumerate(self.pair_keys)}

    def built_bytes(self, dtype: torch.dtype) -> int:
        """Bytes the network built from these tensors holds besides the model's own: the
        whole tensors and the changed weights, in ``dtype`` (a LoRA'd model's merged layers
        are not counted)."""
        numel = sum(t.numel() for t in self.full().values())
        numel += sum(up.shape[0] * down[0].numel() for up, down in self.pairs().values())
        return numel * torch.empty((), dtype=dtype).element_size()


def load_control_lora(source: StateSource, path: Path, device: torch.device | str, dtype: torch.dtype,
                      ) -> ControlNetHandle:
    """A Control-LoRA file's tensors (``source``, opened by ``load.load_controlnet``) in a
    handle of kind ``"control_lora"``: no network yet (see the module docstring). Floating
    tensors keep a narrower stored dtype (they are converted when the network is built).
    Raises ``UnknownCheckpointError`` for a file without the parts the UNet lacks, an
    unpaired ``up``/``down`` or a family its keys do not show."""
    name = path.name
    shapes = source.shapes
    missing = [key for key in _NEEDED if key not in shapes]
    if missing:
        raise UnknownCheckpointError(f"{name} is a Control-LoRA without {', '.join(missing)} (its hint encoder and "
                                     f"zero convolutions must be whole tensors: the model has none)")
    family = control_lora_family(shapes, name)
    hint_channels, embedding = ldm_hint_encoder(shapes)
    full: dict[str, torch.Tensor] = {}
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    ignored = []
    for key in shapes:
        if key == CONTROL_LORA_MARK or "__" in key or not key.endswith(_READ):
            ignored.append(key)
        elif key.endswith((".weight", ".bias")):
            full[key] = source.read(key, dtype, keep_narrow=True)
        elif key.endswith(UP):
            stem = key[:-len(UP)]
            if stem + DOWN not in shapes:
                raise UnknownCheckpointError(f"{name}: {key} has no {stem + DOWN}")
            pairs[stem + ".weight"] = (source.read(key, dtype, keep_narrow=True),
                                       source.read(stem + DOWN, dtype, keep_narrow=True))
        elif key[:-len(DOWN)] + UP not in shapes:
            raise UnknownCheckpointError(f"{name}: {key} has no {key[:-len(DOWN)] + UP}")
    if len(ignored) > 1:
        logging.getLogger(__name__).info("%s: ignored %d keys besides the marker, as ComfyUI does (e.g. %s)", name,
                                          len(ignored) - 1, [k for k in ignored if k != CONTROL_LORA_MARK][:3])
    weights = ControlLoraWeights(full, pairs, hint_channels, embedding)
    return ControlNetHandle(model=weights, family=family, device=torch.device(device), dtype=dtype, source=path,
                            hint_channels=hint_channels, kind="control_lora")


def _merged(layer: Any, dtype: torch.dtype) -> torch.Tensor:
    """A LoRA-patched layer's (``nodes.lora.patch.LoraAdapter``) weight with its LoRAs added
    in float32, as ComfyUI patches a model's weights, in ``dtype``."""
    from nodes.lora.patch import LoraDelta

    weight = layer.weight.detach()
    total = weight.float()
    for i, scale in enumerate(layer.scales):
        delta = LoraDelta(getattr(layer, f"down{i}"), getattr(layer, f"up{i}"), scale, getattr(layer, f"mid{i}"))
        total = total + delta.weight_delta(weight.shape).to(total.device)
    return total.to(dtype)


def model_weights(model: Any, names: set[str]) -> dict[str, torch.Tensor]:
    """The sampled UNet's tensors among diffusers keys ``names``, as the model samples them:
    the loaded UNet's own tensors (shared, not copied), layers a LoRA patches
    (``model.unet`` is then a patched view) merged, in ``model.dtype``."""
    from nodes.lora.patch import LoraAdapter

    state = {k: v.detach() for k, v in model.original_unet.state_dict().items() if k in names}
    for layer_name, layer in model.unet.named_modules():
        if isinstance(layer, LoraAdapter) and f"{layer_name}.weight" in names:
            state[f"{layer_name}.weight"] = _merged(layer, model.dtype)
    return state


def _diffusers_key(names: dict[str, str], ldm_key: str, file: str) -> str:
    if ldm_key not in names:
        raise ValueError(f"the Control-LoRA {file} has {ldm_key!r}, which a ControlNet of this model does not have "
                         f"(is it for another model?)")
    return names[ldm_key]


def build_network(weights: ControlLoraWeights, model: Any, file: str = "the file") -> torch.nn.Module:
    """The ControlNet of Control-LoRA ``weights`` for MODEL handle ``model`` (its
    ``original_unet``, a diffusers ``UNet2DConditionModel``, and ``unet``, maybe a
    LoRA-patched view of it): a diffusers ``ControlNetModel`` in eval mode, see the module
    docstring. Raises ``ValueError`` when the file does not fit the model."""
    from diffusers import ControlNetModel

    unet, dtype = model.original_unet, model.dtype
    if unet.config.in_channels != 4:  # ControlNets get the latent alone, not an inpainting UNet's 9 channels
        raise ValueError(f"the Control-LoRA {file} cannot be built from a UNet taking {unet.config.in_channels} "
                         f"input channels (an inpainting model); ControlNets take the 4-channel latent")
    device = next(p.device for p in unet.parameters())
    with torch.device("meta"):
        network = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=weights.embedding,
                                            load_weights_from_unet=False, conditioning_channels=weights.hint_channels)
    shapes = {k: v.shape for k, v in network.state_dict().items()}
    names = {source.key: target for target, source in controlnet_key_map(shapes, network.config).items()}
    state = model_weights(model, set(shapes))
    for ldm_key, tensor in weights.full().items():
        target = _diffusers_key(names, ldm_key, file)
        if tensor.shape != shapes[target]:
            raise ValueError(f"the Control-LoRA {file} has {ldm_key} of shape {list(tensor.shape)} but this model's "
                             f"ControlNet takes {list(shapes[target])} (is it for another model?)")
        state[target] = tensor.to(device, dtype)
    for ldm_key, (up, down) in weights.pairs().items():
        target = _diffusers_key(names, ldm_key, file)
        base = state.get(target)
        if base is None:
            raise ValueError(f"the Control-LoRA {file} changes {ldm_key}, which neither it nor the model has")
        up, down = up.to(device, dtype).flatten(1), down.to(device, dtype).flatten(1)
        if up.shape[1] != down.shape[0] or up.shape[0] * down.shape[1] != base.numel():
            raise ValueError(f"the Control-LoRA {file}'s change of {ldm_key} (up {list(up.shape)}, down "
                             f"{list(down.shape)}) does not fit its weight {list(base.shape)} (is it for another model?)")
        # ComfyUI's ControlLoraOps: the product in the compute dtype, added to the weight in it
        state[target] = base.to(device, dtype) + (up @ down).reshape(base.shape)
    try:
        network = build.fill(network, state, device, dtype)
    except ModelLoadError as exc:
        raise ValueError(f"the Control-LoRA {file} does not make a ControlNet of this model: {exc}") from exc
    accept_encoded_hints(network)  # sampling encodes each hint once per run
    return network


def control_lora_network(net: ControlNetHandle, model: Any, cache: dict) -> torch.nn.Module:
    """The network of Control-LoRA handle ``net`` for ``model``, built at its first use in
    a sampling run and kept in that run's ``cache`` (ControlSteps': one per run)."""
    key = ("control_lora", id(net.model))
    if key not in cache:
        cache[key] = build_network(net.model, model, net.source.name)
    return cache[key]
