"""ControlNet nodes, with ComfyUI's names, inputs and semantics: ControlNetLoader,
DiffControlNetLoader, ControlNetApply (deprecated in ComfyUI, kept for old workflows),
ControlNetApplyAdvanced, SetUnionControlNetType (union ControlNets' control type) and the
Canny edge preprocessor.

An apply node puts a :class:`~nodes.controlnet.handle.ControlLink` (the network, the
hint, strength and window) under ``"control"`` in a copy of each conditioning entry's
extras, chained after the link the entry already had, so several ControlNets add up.
Sampling runs them with the UNet (``nodes.controlnet.residuals``). Loading and the
network live in ``nodes/controlnet/``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graph import Input, Node, Output
from nodes import memory_estimates
from nodes.controlnet.union_types import UNION_TYPE_NAMES, UNION_TYPES
from nodes.loaders import file_state, model_choices, runtime_dtypes

STRENGTH = {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}
PERCENT = {"min": 0.0, "max": 1.0, "step": 0.001}


# ComfyUI lists models/controlnet and models/t2i_adapter (and their extra_model_paths.yaml
# entries) as one "controlnet" folder list; a name is looked up in that order.
KINDS = ("controlnet", "t2i_adapter")


def control_net_choices(runtime: Any) -> list[str]:
    """The files of models/controlnet and models/t2i_adapter, one list."""
    return sorted({name for kind in KINDS for name in model_choices(kind)(runtime)})


def control_net_state(context: Any, name: str) -> list:
    """``[path, size, mtime]`` of a listed ControlNet or T2I-Adapter (``file_state``)."""
    for kind in KINDS[:-1]:
        try:
            return file_state(context, kind, name)
        except FileNotFoundError:
            continue
    return file_state(context, KINDS[-1], name)


def _load(context: Any, name: str, base_unet: Any = None) -> Any:
    from nodes.controlnet.load import load_controlnet

    path = Path(control_net_state(context, name)[0])
    device, dtypes = runtime_dtypes(context)
    return load_controlnet(path, device=device, dtype=dtypes["unet"], base_unet=base_unet)


class ControlNetLoader(Node):
    """Loads a ControlNet (SD1.x, SD2.x or SDXL; LDM or diffusers layout) from models/controlnet."""

    category = "loaders"
    control_net_name = Input(choices=control_net_choices, tooltip="file in models/controlnet or models/t2i_adapter")
    outputs = (Output("CONTROL_NET"),)

    @classmethod
    def fingerprint(cls, context: Any, control_net_name: str | None = None, **_: Any) -> list | None:
        return control_net_state(context, control_net_name) if control_net_name is not None else None

    def execute(self, control_net_name: str) -> tuple:
        return (_load(self.context, control_net_name),)


class DiffControlNetLoader(Node):
    """Loads a "diff" ControlNet, whose weights are differences to the model's UNet: they
    are added to the model's (as loaded, without LoRAs)."""

    category = "loaders"
    model = Input("MODEL")
    control_net_name = Input(choices=control_net_choices, tooltip="file in models/controlnet or models/t2i_adapter")
    outputs = (Output("CONTROL_NET"),)

    @classmethod
    def fingerprint(cls, context: Any, control_net_name: str | None = None, **_: Any) -> list | None:
        return control_net_state(context, control_net_name) if control_net_name is not None else None

    def execute(self, model: Any, control_net_name: str) -> tuple:
        return (_load(self.context, control_net_name, base_unet=model.original_unet),)


def _hint(image: Any) -> Any:
    """An IMAGE [B, H, W, C] -> the hint [B, C, H, W] float32 on the CPU; a clear error otherwise."""
    import torch

    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"the ControlNet hint must be an IMAGE [batch, height, width, channels], got {shape}")
    return image.movedim(-1, 1).float().cpu().contiguous()


def _check_net(control_net: Any) -> Any:
    from nodes.controlnet.handle import ControlNetHandle

    if not isinstance(control_net, ControlNetHandle):
        raise ValueError(f"expected a CONTROL_NET (ControlNetLoader), got {type(control_net).__name__}")
    return control_net


class ControlNetApply(Node):
    """Applies a ControlNet to one conditioning for the whole sampling. At sampling time the
    negative conditioning gets the same ControlNet (ComfyUI's ``control_apply_to_uncond``)."""

    category = "conditioning/controlnet"
    deprecated = True
    conditioning = Input("CONDITIONING")
    control_net = Input("CONTROL_NET")
    image = Input("IMAGE", tooltip="the hint: an edge map, depth map, pose... resized to the latent's size")
    strength = Input("FLOAT", **STRENGTH)
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning: list, control_net: Any, image: Any, strength: float) -> tuple:
        from nodes.controlnet.handle import ControlledConditioning, ControlLink, control_of

        if strength == 0:
            return (conditioning,)
        net, hint = _check_net(control_net), _hint(image)
        out = []
        for cond, extras in conditioning:
            link = ControlLink(net, hint, float(strength), previous=control_of(extras))
            out.append([cond, dict(extras, control=link, control_apply_to_uncond=True)])
        return (ControlledConditioning(out),)


class ControlNetApplyAdvanced(Node):
    """Applies a ControlNet to the positive and negative conditioning between two points of
    the sampling (fractions of the way from the first step, 0, to the last, 1). Chain
    several to combine ControlNets; their residuals add up."""

    category = "conditioning/controlnet"
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    control_net = Input("CONTROL_NET")
    image = Input("IMAGE", tooltip="the hint: an edge map, depth map, pose... resized to the latent's size")
    strength = Input("FLOAT", **STRENGTH)
    start_percent = Input("FLOAT", default=0.0, **PERCENT)
    end_percent = Input("FLOAT", default=1.0, **PERCENT)
    vae = Input("VAE", optional=True, tooltip="for ControlNets that take the hint as latents (not SD1.x/SDXL ones)")
    outputs = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    def execute(self, positive: list, negative: list, control_net: Any, image: Any, strength: float,
                start_percent: float, end_percent: float, vae: Any = None) -> tuple:
        from nodes.controlnet.handle import ControlledConditioning, ControlLink, control_of

        if strength == 0:
            return (positive, negative)
        net, hint = _check_net(control_net), _hint(image)
        # one link per previous chain, shared by the positive and negative entries that had
        # it, so that sampling runs them together (ComfyUI's ``cnets`` dict)
        links: dict[int, ControlLink] = {}
        out = []
        for conditioning in (positive, negative):
            entries = []
            for cond, extras in conditioning:
                previous = control_of(extras)
                if id(previous) not in links:
                    links[id(previous)] = ControlLink(net, hint, float(strength), float(start_percent),
                                                      float(end_percent), previous)
                entries.append([cond, dict(extras, control=links[id(previous)], control_apply_to_uncond=False)])
            out.append(ControlledConditioning(entries))
        return (out[0], out[1])


class SetUnionControlNetType(Node):
    """Chooses the control type a union ControlNet (ControlNet++, e.g. controlnet-union-sdxl-1.0
    or its promax variant) is run with; "auto" runs it without one, as ComfyUI. Returns a
    new CONTROL_NET: the input is unchanged. As in ComfyUI, other ControlNets and
    T2I-Adapters ignore the type."""

    category = "conditioning/controlnet"
    control_net = Input("CONTROL_NET")
    type = Input(choices=["auto", *UNION_TYPE_NAMES])
    outputs = (Output("CONTROL_NET"),)

    def execute(self, control_net: Any, type: str) -> tuple:  # "type": ComfyUI's input name
        from nodes.controlnet.union import check_type

        net = _check_net(control_net)
        index = UNION_TYPES.get(type)  # None: "auto" (ComfyUI's empty control_type list)
        if net.kind == "union":
            check_type(net.model, index, net.source.name)
        elif index is not None:
            logging.getLogger(__name__).warning("SetUnionControlNetType: %s is not a union ControlNet; the type %r "
                                                "is ignored, as in ComfyUI", net.source.name, type)
        return (net.with_control_type(index),)


class Canny(Node):
    """Edge map of an image (kornia's Canny detector, as ComfyUI): white edges on black.
    Thresholds are on the gradient magnitude of the 0..1 image."""

    category = "image/preprocessors"
    image = Input("IMAGE")
    low_threshold = Input("FLOAT", default=0.4, min=0.01, max=0.99, step=0.01)
    high_threshold = Input("FLOAT", default=0.8, min=0.01, max=0.99, step=0.01)
    outputs = (Output("IMAGE"),)

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        return memory_estimates.canny(inputs)

    def execute(self, image: Any, low_threshold: float, high_threshold: float) -> tuple:
        from kornia.filters import canny

        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold ({low_threshold}) must not be above high_threshold ({high_threshold})")
        _, edges = canny(image.float().movedim(-1, 1), low_threshold, high_threshold)
        return (edges.repeat(1, 3, 1, 1).movedim(1, -1).contiguous(),)
