"""Split a LoRA state dict into per-layer groups, whatever the file's key layout.

A LoRA holds, per patched layer, a ``down`` [r, in] (or [r, in, kh, kw] for a conv) and an
``up`` [out, r] (or [out, r, 1, 1]) matrix, optionally a scalar ``alpha`` (scale =
alpha / r; absent means 1) and, for Tucker-decomposed LoCon, a ``mid`` [r, r, kh, kw].
Layouts read here (``layer`` is the layer's name in the file):

=============================  ===========================================================
kohya / sd-scripts             ``lora_unet_<layer>.lora_down.weight`` / ``.lora_up.weight``
                               / ``.lora_mid.weight`` / ``.alpha``; text encoders
                               ``lora_te_``, ``lora_te1_``, ``lora_te2_``
diffusers                      ``unet.<layer>.lora.down.weight``, ``text_encoder.<layer>.
                               lora_linear_layer.up.weight``, attention processors
                               ``unet.<...>.processor.to_q_lora.down.weight``
PEFT                           ``<prefix>.<layer>.lora_A.weight`` / ``.lora_B.weight``
=============================  ===========================================================

Prefixes say which model part a group targets: ``unet`` (``lora_unet_``, ``unet.``,
``diffusion_model.``, ``model.diffusion_model.``, ``base_model.model.``, or none), or text
encoder 0 (``lora_te_``, ``lora_te1_``, ``text_encoder.``) / 1 (``lora_te2_``,
``text_encoder_2.``). Whether ``layer`` exists is for ``targets`` to say.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

# (suffix, part), longest first so that ".lora.down.weight" is not read as "_lora.down.weight".
_PARTS = (
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".lora_mid.weight", "mid"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    ("_lora.down.weight", "down"), ("_lora.up.weight", "up"),
    (".alpha", "alpha"),
)
_PEFT_NAMED = re.compile(r"^(.+)\.lora_([AB])\.[^.]+\.weight$")  # lora_A.<adapter name>.weight
# Other LyCORIS/DoRA kinds, reported by name rather than as unknown keys.
_OTHER_KINDS = (
    (re.compile(r"\.hada_\w+$"), "LoHa"), (re.compile(r"\.lokr_\w+$"), "LoKr"),
    (re.compile(r"\.dora_scale$"), "DoRA"), (re.compile(r"\.diff(_b)?$"), "full diff"),
    (re.compile(r"\.lora_(down|up)\.bias$"), "LoRA bias"),
)
# (prefix, target), longest first; "unet" or the text encoder's index.
_PREFIXES: tuple[tuple[str, str | int], ...] = (
    ("lora_unet_", "unet"), ("lora_te1_", 0), ("lora_te2_", 1), ("lora_te_", 0),
    ("model.diffusion_model.", "unet"), ("diffusion_model.", "unet"), ("base_model.model.", "unet"),
    ("unet.", "unet"), ("text_encoder_2.", 1), ("text_encoder.", 0),
)
_BARE_UNET = ("down_blocks.", "mid_block.", "up_blocks.", "conv_in.", "conv_out.", "time_embedding.",
              "add_embedding.", "conv_norm_out.")


@dataclass
class LoraGroup:
    """The tensors of one patched layer, as found in the file (not yet checked against a model)."""

    target: str | int  # "unet", or a text encoder index
    layer: str  # the layer name as the file spells it, without prefix (dotted or underscored)
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    mid: torch.Tensor | None = None
    alpha: float | None = None
    keys: list[str] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0]) if self.down is not None else 0

    @property
    def scale(self) -> float:
        """alpha / rank (1 when the file has no alpha)."""
        return self.alpha / self.rank if self.alpha is not None and self.rank else 1.0


@dataclass
class ParsedLora:
    """``groups`` by (target, layer); ``unknown``: keys of no known layout; ``other_kinds``:
    key counts of adapter kinds we do not apply (LoHa, LoKr, DoRA, ...); ``incomplete``:
    groups missing their down or up matrix."""

    groups: dict[tuple[str | int, str], LoraGroup]
    unknown: list[str]
    other_kinds: Counter
    incomplete: list[LoraGroup]


def _split_part(key: str) -> tuple[str, str] | None:
    """``(layer with prefix, part)`` for a LoRA tensor key, or None."""
    for suffix, part in _PARTS:
        if key.endswith(suffix):
            return key[: -len(suffix)], part
    m = _PEFT_NAMED.match(key)
    if m:
        return m.group(1), "down" if m.group(2) == "A" else "up"
    return None


def _split_prefix(name: str) -> tuple[str | int, str] | None:
    for prefix, target in _PREFIXES:
        if name.startswith(prefix):
            return target, name[len(prefix):]
    if name.startswith(_BARE_UNET):
        return "unet", name
    return None


def _normalize_processor(layer: str) -> str:
    """diffusers attention-processor names -> layer names: ``attn1.processor.to_out`` -> ``attn1.to_out.0``."""
    if ".processor." not in layer:
        return layer
    layer = layer.replace(".processor.", ".")
    return layer + ".0" if layer.endswith(".to_out") else layer


def parse_lora(state: Mapping[str, torch.Tensor]) -> ParsedLora:
    """Group a LoRA state dict by layer. Never raises on odd keys: they are reported."""
    groups: dict[tuple[str | int, str], LoraGroup] = {}
    unknown: list[str] = []
    other = Counter()
    for key, tensor in state.items():
        kind = next((name for marker, name in _OTHER_KINDS if marker.search(key)), None)
        if kind is not None:
            other[kind] += 1
            continue
        split = _split_part(key)
        located = _split_prefix(split[0]) if split else None
        if split is None or located is None:
            unknown.append(key)
            continue
        target, layer = located
        layer = _normalize_processor(layer)
        group = groups.setdefault((target, layer), LoraGroup(target, layer))
        group.keys.append(key)
        part = split[1]
        if part == "alpha":
            group.alpha = float(tensor.reshape(-1)[0]) if tensor.numel() else None
        else:
            setattr(group, part, tensor)
    complete = {k: g for k, g in groups.items() if g.down is not None and g.up is not None}
    incomplete = [g for k, g in groups.items() if k not in complete]
    return ParsedLora(complete, unknown, other, incomplete)
