"""The CONTROL_NET value, and what an apply node puts into a conditioning entry.

:class:`ControlNetHandle` is a loaded network, cached like any model handle (the output
cache's ``"models"`` pool; ``size_bytes`` and ``modules`` as ``nodes.sd.runtime``'s
protocol asks). :class:`ControlLink` is ComfyUI's per-apply ControlNet copy: the network
with one hint image, strength and sampling window, and the link it was chained after
(``previous``); it goes into a conditioning entry's extras under ``"control"``. Both are
frozen: chaining makes a new link, so a cached conditioning never changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from nodes.sd.handles import module_bytes


@dataclass(frozen=True, eq=False)
class ControlNetHandle:
    """CONTROL_NET: a diffusers ``ControlNetModel`` (``ControlNetUnionModel``, ``T2IAdapter``) in eval
    mode, or a Control-LoRA's tensors (its network is built from the sampled model, see ``kind``).

    ``family``: ``"sd1"``, ``"sd2"`` or ``"sdxl"``, the models it was trained for;
    ``hint_channels``: channels of the hint image it takes (3); ``source``: the file.
    ``control_type``: the control type SetUnionControlNetType chose (an index of
    ``nodes.controlnet.union_types.UNION_TYPES``), None for "auto" or never set; only a union
    ControlNet reads it (ComfyUI passes it to every ControlNet, and the others ignore it).
    ``shared``: the network belongs to the handle this one was derived from, which counts
    its bytes in the cache.
    """

    cache_pool: ClassVar[str] = "models"  # the output cache's pool: POST /free unloads it

    model: Any
    family: str
    device: torch.device
    dtype: torch.dtype
    source: Path
    hint_channels: int = 3
    # "union" (a diffusers ControlNetUnionModel), "t2i_adapter" (a T2IAdapter) or "control_lora"
    # (a Control-LoRA: ``model`` holds the file's tensors, nodes.controlnet.control_lora.ControlLoraWeights)
    kind: str = "controlnet"
    hint_multiple: int = 8  # a T2I-Adapter's hint is rounded up to a multiple of its pixel-unshuffle factor
    control_type: int | None = None
    shared: bool = False

    def size_bytes(self) -> int:
        return 0 if self.shared else module_bytes(self.model)

    def sampling_bytes(self, dtype: torch.dtype) -> int:
        """Memory a sampling run allocates for this ControlNet besides :meth:`size_bytes`: a
        Control-LoRA's network, built from the model then (in the model's compute ``dtype``);
        0 for the others."""
        return self.model.built_bytes(dtype) if self.kind == "control_lora" else 0

    def with_control_type(self, control_type: int | None) -> ControlNetHandle:
        """A new handle on the same network with ``control_type`` set (this one is unchanged:
        it may be a cached output)."""
        return replace(self, control_type=control_type, shared=True)

    def modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.model,)


@dataclass(frozen=True, eq=False)
class ControlLink:
    """One apply node's use of a ControlNet, chained after ``previous``.

    ``hint``: the control image, [B, C, H, W] float32 on the CPU, 0..1 (ComfyUI's
    ``image.movedim(-1, 1)``); it is resized to the latent's size x 8 when sampling.
    ``strength`` multiplies the residuals; ``start_percent``/``end_percent`` are the
    fractions of the sampling between which the link takes part (ComfyUI's
    ``timestep_percent_range``, compared in sigma). Identity matters: the positive and
    negative entries an apply node gives one link share it, and so are run together.
    """

    net: ControlNetHandle
    hint: torch.Tensor
    strength: float
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: ControlLink | None = None

    def chain(self) -> Iterator[ControlLink]:
        """This link and every earlier one, newest first."""
        link: ControlLink | None = self
        while link is not None:
            yield link
            link = link.previous

    def size_bytes(self) -> int:
        """The hints the chain holds (the networks are counted as their own handles)."""
        return sum(link.hint.numel() * link.hint.element_size() for link in self.chain())


class ControlledConditioning(list):
    """A CONDITIONING list made by an apply node (its entries hold ControlLinks). It belongs
    to the output cache's ``"models"`` pool, so that POST /free's ``unload_models`` drops it
    with the ControlNets instead of a cached conditioning keeping an unloaded network alive
    (conditionings derived from it by other nodes are plain lists and do not)."""

    cache_pool: ClassVar[str] = "models"


def control_of(extras: Any) -> ControlLink | None:
    """The ControlLink of a conditioning entry's extras, or None."""
    control = extras.get("control") if isinstance(extras, dict) else None
    return control if isinstance(control, ControlLink) else None


def control_handles(*conditionings: Iterable[Any]) -> tuple[ControlNetHandle, ...]:
    """Every ControlNet the entries of some CONDITIONING values use, once each (what must be
    on the device with the UNet while they are sampled)."""
    found: dict[int, ControlNetHandle] = {}  # by network: handles of several control types share one
    for conditioning in conditionings:
        for entry in conditioning or ():
            if isinstance(entry, (list, tuple)) and len(entry) == 2 and (link := control_of(entry[1])):
                for item in link.chain():
                    found.setdefault(id(item.net.model), item.net)
    return tuple(found.values())
