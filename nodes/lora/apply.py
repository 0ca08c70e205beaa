"""Match a LoRA file to a MODEL and CLIP, and build the patched handles.

``lora_for(model, clip, state, name)`` checks every group of the file against the model's
layers (names and shapes) and returns a ``LoraMatch``; ``apply_to_model`` /
``apply_to_clip`` return new handles with the LoRA added at a strength. Problems:

* keys of no known layout, LoRA groups naming layers the models do not have, or adapter
  kinds we do not apply (LoHa, LoKr): a warning with counts and examples (logger
  ``latentgraph.lora``), and the rest is applied;
* nothing at all matches, or a matched layer has the wrong shape (a LoRA for another
  model family), or DoRA weights: ``LoraError``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch

from nodes.lora.keys import LoraGroup, parse_lora
from nodes.lora.patch import LoraDelta, patched_view
from nodes.lora.targets import encoder_aliases, unet_aliases
from nodes.models import cast_weights
from nodes.sd.handles import ClipHandle, ModelHandle

log = logging.getLogger("latentgraph.lora")


class LoraError(ValueError):
    """A LoRA that cannot be applied to the given model."""


@dataclass(frozen=True)
class AppliedLora:
    """One LoRA on one model part: its file name, strength and ``{module name: delta}``."""

    name: str
    strength: float
    deltas: Mapping[str, LoraDelta]

    def nbytes(self) -> int:
        return sum(d.nbytes() for d in self.deltas.values())


@dataclass
class LoraMatch:
    """A LoRA's groups resolved against one model and clip.

    ``unet`` / ``encoders[i]``: ``{module name: group}`` at strength 1 (scale alpha / rank).
    ``unmatched``: file keys applied nowhere, by reason; ``encoder_count``: how many text
    encoder groups the file has (whether or not a clip was given).
    """

    name: str
    unet: dict[str, LoraGroup] = field(default_factory=dict)
    encoders: list[dict[str, LoraGroup]] = field(default_factory=list)
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    encoder_count: int = 0

    def summary(self) -> str:
        parts = [f"{len(self.unet)} UNet layers"]
        parts += [f"{len(e)} layers of text encoder {i}" for i, e in enumerate(self.encoders)]
        return ", ".join(parts)


def _check_shape(group: LoraGroup, layer: torch.nn.Module) -> str | None:
    """Why ``group`` does not fit ``layer``, or None when it does."""
    down, up, mid = group.down, group.up, group.mid
    rank = down.shape[0]
    if up.shape[1] != rank or (mid is not None and tuple(mid.shape[:2]) != (rank, rank)):
        return f"rank mismatch: down {tuple(down.shape)}, up {tuple(up.shape)}"
    if isinstance(layer, torch.nn.Linear):
        ok = down[0].numel() == layer.in_features and up.shape[0] == layer.out_features and mid is None
        expected = f"[{layer.out_features}, {layer.in_features}]"
    else:
        kernel = tuple(layer.kernel_size)
        down_kernel = tuple(down.shape[2:]) or (1, 1)
        ok = layer.groups == 1 and down.shape[1] == layer.in_channels and up.shape[0] == layer.out_channels
        ok = ok and up[0].numel() == rank
        ok = ok and (down_kernel == kernel if mid is None else down_kernel == (1, 1) and tuple(mid.shape[2:]) == kernel)
        expected = f"[{layer.out_channels}, {layer.in_channels}, {kernel[0]}, {kernel[1]}]"
    if ok:
        return None
    return f"layer weight {expected}, LoRA down {tuple(down.shape)} up {tuple(up.shape)}"


def match_lora(state: Mapping[str, torch.Tensor], name: str, unet: torch.nn.Module | None,
               encoders: tuple[torch.nn.Module, ...] | None) -> LoraMatch:
    """Resolve a LoRA state dict against a UNet and/or text encoders (the unpatched ones).

    ``unet`` None: UNet groups are skipped; ``encoders`` None: text encoder groups are
    skipped (LoraLoaderModelOnly), neither counts as unmatched. Raises ``LoraError`` for
    DoRA files and for groups whose shape does not fit their layer.
    """
    parsed = parse_lora(state)
    if parsed.other_kinds.get("DoRA"):
        raise LoraError(f"{name}: DoRA LoRAs (dora_scale) are not supported")
    match = LoraMatch(name, encoders=[{} for _ in encoders or ()])
    unmatched: dict[str, list[str]] = {}
    if parsed.unknown:
        unmatched["keys of no known LoRA layout"] = parsed.unknown
    for kind, count in parsed.other_kinds.items():
        unmatched[f"{kind} weights (not supported)"] = [f"{count} keys"]
    incomplete = [k for g in parsed.incomplete for k in g.keys]
    if incomplete:
        unmatched["LoRA layers missing their up or down matrix"] = incomplete
    tables: dict[str | int, tuple[torch.nn.Module, dict[str, str], dict[str, LoraGroup]]] = {}
    if unet is not None:
        tables["unet"] = (unet, unet_aliases(unet), match.unet)
    for i, encoder in enumerate(encoders or ()):
        tables[i] = (encoder, encoder_aliases(encoder), match.encoders[i])
    mismatched: list[str] = []
    for (target, layer), group in parsed.groups.items():
        if target != "unet":
            match.encoder_count += 1
        if target not in tables:
            if target == "unet" and unet is None or target != "unet" and encoders is None:
                continue
            unmatched.setdefault("layers for a text encoder this CLIP does not have", []).extend(group.keys)
            continue
        root, aliases, found = tables[target]
        module_name = aliases.get(layer)
        if module_name is None:
            unmatched.setdefault("layers this model does not have", []).extend(group.keys)
            continue
        problem = _check_shape(group, root.get_submodule(module_name))
        if problem:
            mismatched.append(f"{layer}: {problem}")
            continue
        found[module_name] = group
    if mismatched:
        raise LoraError(f"{name} does not fit this model (a LoRA for another model family?): "
                        f"{len(mismatched)} layers have other shapes, e.g. {mismatched[0]}")
    match.unmatched = unmatched
    if not match.unet and not any(match.encoders):
        hint = f" (it has {match.encoder_count} text encoder layers: use LoraLoader)" \
            if encoders is None and match.encoder_count else ""
        raise LoraError(f"{name}: none of its {len(state)} keys match this model{hint}; e.g. "
                        f"{sorted(state)[:3]}. Is it a LoRA for another model family, or not a LoRA?")
    if unmatched:
        counts = Counter({reason: len(keys) for reason, keys in unmatched.items()})
        detail = "; ".join(f"{n} {reason} (e.g. {unmatched[reason][0]})" for reason, n in counts.most_common())
        log.warning("LoRA %s: applied to %s; ignored: %s", name, match.summary(), detail)
    return match


def _deltas(groups: Mapping[str, LoraGroup], strength: float, module: torch.nn.Module) -> dict[str, LoraDelta]:
    """The groups' tensors placed where ``module`` runs, in the dtype it computes in (not the
    narrower one its weights may be stored in: ``cast_weights``)."""
    device = next(p for p in module.parameters() if p.is_floating_point()).device
    dtype = cast_weights.compute_dtype(module)

    def place(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=device, dtype=dtype)

    return {name: LoraDelta(place(g.down), place(g.up), strength * g.scale, place(g.mid))
            for name, g in groups.items()}


def deltas_by_layer(applied: tuple[AppliedLora, ...]) -> dict[str, list[LoraDelta]]:
    """``{module name: [delta, ...]}`` of a sequence of applied LoRAs, in order."""
    by_layer: dict[str, list[LoraDelta]] = {}
    for lora in applied:
        for name, delta in lora.deltas.items():
            by_layer.setdefault(name, []).append(delta)
    return by_layer


def apply_to_model(model: ModelHandle, match: LoraMatch, strength: float) -> ModelHandle:
    """``model`` with the matched UNet layers of a LoRA added at ``strength``.

    Strength 0 (or a LoRA without UNet layers) returns ``model`` itself.
    """
    if strength == 0 or not match.unet:
        return model
    base = model.original_unet
    lora = AppliedLora(match.name, strength, _deltas(match.unet, strength, base))
    patches = (*model.patches, lora)
    return replace(model, unet=patched_view(base, deltas_by_layer(patches)), patches=patches, base_unet=base)


def apply_to_clip(clip: ClipHandle, match: LoraMatch, strength: float) -> ClipHandle:
    """``clip`` with the matched text encoder layers of a LoRA added at ``strength``.

    Strength 0 (or a LoRA without text encoder layers) returns ``clip`` itself. ``patches``
    holds one tuple of ``AppliedLora`` per encoder.
    """
    if strength == 0 or not any(match.encoders):
        return clip
    bases = clip.original_encoders
    previous = clip.patches or tuple(() for _ in bases)
    patches = tuple(
        (*old, AppliedLora(match.name, strength, _deltas(groups, strength, enc)))
        if groups else old
        for enc, groups, old in zip(bases, match.encoders, previous, strict=True))
    encoders = tuple(patched_view(enc, deltas_by_layer(p)) if p else enc for enc, p in zip(bases, patches, strict=True))
    return replace(clip, encoders=encoders, patches=patches, base_encoders=bases)
