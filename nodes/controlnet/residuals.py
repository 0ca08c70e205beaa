"""The control residuals of one UNet call, for every row of its batch.

A UNet call's batch holds several conditioning entries (uncond and cond, areas...), each
``batch`` rows. :class:`ControlRows` says which :class:`~nodes.controlnet.handle.ControlLink`
chain each entry's rows have; it travels with the entries' other UNet inputs (the
``"control"`` key that ``nodes.sd.unet_call.conditioning_regions`` adds), is joined with
them along the batch (:meth:`ControlRows.join`, called by ``concat_conds``), gets the
step's sigma from :class:`ControlSteps`, and gives the UNet its extra inputs
(:meth:`ControlRows.unet_kwargs`).

Rows sharing one chain (ControlNetApplyAdvanced gives the positive and negative entries
the same link) are run through each ControlNet together, in one batched pass; rows of
different chains are run apart and rows with none get zero residuals (adding zero leaves
the UNet's result exactly as without ControlNet). A chain is evaluated as ComfyUI's
``get_control``: the previous links first, then this link if the step's sigma is inside
its window, its residuals times its strength added to theirs.

A union ControlNet runs with the control type its handle carries
(``nodes.controlnet.union``). A Control-LoRA's network is built from the sampled model at
the run's first UNet call and kept in the run's cache (``nodes.controlnet.control_lora``),
then runs as a plain ControlNet. A T2I-Adapter link adds its features inside the UNet's down blocks
(``down_intrablock_additional_residuals``) instead; they depend on the hint alone and are
computed once per run.

Hints (ComfyUI's ``common_upscale(hint, w * 8, h * 8, "nearest-exact", "center")``): the
hint is centre-cropped to the latent's aspect ratio and resized with nearest-exact to the
UNet input's size x 8 (a crop's size, for an area entry: the whole hint squeezed into it,
as in ComfyUI), then broadcast over the batch as ComfyUI's ``broadcast_image_to``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from nodes.controlnet.control_lora import control_lora_network
from nodes.controlnet.handle import ControlLink, control_of
from nodes.controlnet.hint_encoding import PassEncodedHints, encoded_hint
from nodes.controlnet.union import check_type, union_residuals

Segment = tuple[ControlLink | None, int, int | None]  # (chain head, entries, rows per entry; None: not yet fitted)


def _add(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    if not a or not b:
        return a or b
    if len(a) != len(b):
        raise ValueError("chained ControlNets give different numbers of residuals; are they for one model family?")
    return tuple(x + y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class Residuals:
    """What a chain adds to the UNet: ControlNets' residuals for each skip connection
    (``down``) and the middle block (``mid``, as a 1-tuple), T2I-Adapters' features added
    inside the down blocks (``intrablock``). Empty tuples where nothing of that kind ran."""

    down: tuple[torch.Tensor, ...] = ()
    mid: tuple[torch.Tensor, ...] = ()
    intrablock: tuple[torch.Tensor, ...] = ()

    def __add__(self, other: Residuals) -> Residuals:
        return Residuals(_add(self.down, other.down), _add(self.mid, other.mid),
                         _add(self.intrablock, other.intrablock))


FIELDS = ("down", "mid", "intrablock")


@dataclass(frozen=True)
class ControlRows:
    """Which chain the rows of a UNet batch have: ``segments`` in batch order, each
    ``(chain head or None, entries, rows per entry)``. ``sigma``: the step's noise level
    (set by :class:`ControlSteps`); ``cache``: resized hints, kept for one sampling run."""

    segments: tuple[Segment, ...]
    sigma: float | None = None
    cache: dict | None = None

    @classmethod
    def of_entry(cls, extras: Any) -> ControlRows:
        """One conditioning entry's rows (their number fitted when joined)."""
        return cls(((control_of(extras), 1, None),))

    @classmethod
    def join(cls, parts: Sequence[ControlRows], batch: int) -> ControlRows:
        """The rows of several entries' inputs concatenated along the batch, each entry
        ``batch`` rows (``concat_conds``' fitting)."""
        segments: list[Segment] = []
        for part in parts:
            for link, entries, rows in part.segments:
                rows = batch if rows is None else rows
                if segments and segments[-1][0] is link and segments[-1][2] == rows:
                    segments[-1] = (link, segments[-1][1] + entries, rows)
                else:
                    segments.append((link, entries, rows))
        return cls(tuple(segments), parts[0].sigma, parts[0].cache)

    def at(self, sigma: float, cache: dict) -> ControlRows:
        return replace(self, sigma=sigma, cache=cache)

    def unet_kwargs(self, model: Any, x_in: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                    text_embeds: torch.Tensor | None = None, time_ids: torch.Tensor | None = None) -> dict[str, Any]:
        """The UNet's extra keyword inputs (``down_block_additional_residuals``,
        ``mid_block_additional_residual``) for ``x_in`` [N, 4, h, w] (before any inpainting
        channels), ``timestep`` [N], ``context`` [N, T, D] and SDXL's ``text_embeds`` [N, P]
        and ``time_ids`` [N, 6]; ``{}`` when no chain is active. ``model``: the MODEL handle
        (its family, schedule and dtype)."""
        added = {"text_embeds": text_embeds, "time_ids": time_ids} \
            if text_embeds is not None and time_ids is not None else None
        if all(link is None for link, _, _ in self.segments):
            return {}
        if self.sigma is None:
            raise RuntimeError("ControlNet rows reached the UNet without a sigma (the denoiser is not wrapped "
                               "in ControlSteps)")
        cache = self.cache if self.cache is not None else {}
        outputs: list[tuple[int, Residuals | None]] = []
        start = 0
        for link, entries, rows in self.segments:
            size = entries * (rows or 0)
            part = slice(start, start + size)
            out = None
            if link is not None:
                added_part = {k: v[part] for k, v in added.items()} if added else None
                out = _chain(link, model, x_in[part], timestep[part], context[part], added_part, self.sigma,
                             entries, cache)
            outputs.append((size, out))
            start += size
        if start != x_in.shape[0]:
            raise ValueError(f"ControlNet rows cover {start} rows of a batch of {x_in.shape[0]}")
        present = [out for _, out in outputs if out is not None]
        if not present:  # every chain is outside its window at this step
            return {}
        merged: dict[str, tuple[torch.Tensor, ...]] = {}
        for name in FIELDS:
            like = next((getattr(out, name) for out in present if getattr(out, name)), ())
            if len(outputs) == 1 or not like:
                merged[name] = getattr(present[0], name) if len(outputs) == 1 else ()
                continue
            # rows without this kind of residual get zeros: adding them leaves the UNet's result as it was
            merged[name] = tuple(torch.cat([getattr(out, name)[index] if out is not None and getattr(out, name)
                                            else like[index].new_zeros((size, *like[index].shape[1:]))
                                            for size, out in outputs]) for index in range(len(like)))
        dtype = model.dtype
        kwargs: dict[str, Any] = {}
        if merged["down"]:
            kwargs["down_block_additional_residuals"] = tuple(r.to(dtype) for r in merged["down"])
            kwargs["mid_block_additional_residual"] = merged["mid"][0].to(dtype)
        if merged["intrablock"]:  # a list: the UNet pops from it
            kwargs["down_intrablock_additional_residuals"] = [r.to(dtype) for r in merged["intrablock"]]
        return kwargs


def _chain(link: ControlLink, model: Any, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
           added: dict[str, torch.Tensor] | None, sigma: float, entries: int, cache: dict) -> Residuals | None:
    """A chain's residuals for rows ``x`` (``entries`` entries of equal size): ComfyUI's
    ``get_control``, previous links first."""
    previous = _chain(link.previous, model, x, timestep, context, added, sigma, entries, cache) \
        if link.previous is not None else None
    high = model.schedule.percent_to_sigma(link.start_percent)
    low = model.schedule.percent_to_sigma(link.end_percent)
    if sigma > high or sigma < low:
        return previous
    own = _run(link, model, x, timestep, context, added, entries, cache)
    return own if previous is None else own + previous


def _run(link: ControlLink, model: Any, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
         added: dict[str, torch.Tensor] | None, entries: int, cache: dict) -> Residuals:
    net = link.net
    if net.family != model.family and (net.kind != "t2i_adapter" or "sdxl" in (net.family, model.family)):
        raise ValueError(f"a ControlNet for {net.family} ({net.source.name}) cannot guide a {model.family} model")
    device, dtype = net.device, net.dtype
    if net.kind == "t2i_adapter":
        return _adapter_features(link, x, entries, cache)
    network = net.model
    if net.kind == "control_lora":  # built from the sampled model at the run's first call
        network = control_lora_network(net, model, cache)
        device, dtype = network.device, model.dtype
    hint = prepared_hint(link.hint, x.shape, entries, device, dtype, cache, key=id(link))
    if hint.shape[1] != net.hint_channels:
        raise ValueError(f"the ControlNet {net.source.name} takes a {net.hint_channels}-channel hint image, "
                         f"got {hint.shape[1]} channels")
    extra = {k: v.to(device, dtype) for k, v in added.items()} if added else None
    if net.kind == "union":  # ComfyUI's union forward, with the type SetUnionControlNetType chose
        check_type(net.model, net.control_type, net.source.name)
        down, mid = union_residuals(net.model, x.to(device, dtype), timestep.to(device), context.to(device, dtype),
                                    hint, net.control_type, float(link.strength), extra)
        return Residuals(tuple(down), (mid,))
    if isinstance(network.controlnet_cond_embedding, PassEncodedHints):  # encode the hint once per run
        hint = encoded_hint(network, hint, cache, ("encoded", id(link), *x.shape, entries))
    down, mid = network(x.to(device, dtype), timestep.to(device), encoder_hidden_states=context.to(device, dtype),
                          controlnet_cond=hint, conditioning_scale=float(link.strength), added_cond_kwargs=extra,
                          return_dict=False)
    return Residuals(tuple(down), (mid,))


def _adapter_features(link: ControlLink, x: torch.Tensor, entries: int, cache: dict) -> Residuals:
    """A T2I-Adapter's features (they depend on the hint alone: computed once per run and
    size, as ComfyUI does), times the link's strength. The hint is resized to the input's
    size x 8 rounded up to the adapter's unshuffle factor, averaged to one channel for a
    1-channel adapter (ComfyUI's ``T2IAdapter.get_control``)."""
    net = link.net
    n, _, h, w = x.shape
    key = ("adapter", id(link), n, h, w, entries)
    if key not in cache:
        step = net.hint_multiple
        height, width = -(-h * 8 // step) * step, -(-w * 8 // step) * step
        hint = resize_hint(link.hint.float(), height, width)
        if net.hint_channels == 1 and hint.shape[1] > 1:
            hint = hint.mean(dim=1, keepdim=True)
        if hint.shape[1] != net.hint_channels:
            raise ValueError(f"the T2I-Adapter {net.source.name} takes a {net.hint_channels}-channel hint image, "
                             f"got {hint.shape[1]} channels")
        hint = broadcast_hint(hint, n, entries).to(net.device, net.dtype)
        cache[key] = tuple(net.model(hint))
    features = tuple((f * float(link.strength)).expand(n, *f.shape[1:]) for f in cache[key])
    return Residuals(intrablock=features)


def resize_hint(hint: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``hint`` [B, C, H, W] centre-cropped to the aspect ratio of ``height`` x ``width``,
    then resized to it with nearest-exact (ComfyUI's ``common_upscale(..., "center")``)."""
    old_h, old_w = hint.shape[-2:]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    cropped = hint[..., y:old_h - y, x:old_w - x]
    if cropped.shape[-2:] == (height, width):
        return cropped
    return F.interpolate(cropped, size=(height, width), mode="nearest-exact")


def broadcast_hint(hint: torch.Tensor, target: int, entries: int) -> torch.Tensor:
    """ComfyUI's ``broadcast_image_to``: a batch-1 hint stays (it broadcasts); otherwise
    its first ``target / entries`` images, repeated to that many, once per entry."""
    if hint.shape[0] == 1:
        return hint
    per_entry = target // entries
    hint = hint[:per_entry]
    if per_entry > hint.shape[0]:
        hint = torch.cat([hint] * (per_entry // hint.shape[0]) + [hint[:per_entry % hint.shape[0]]])
    return hint if hint.shape[0] == target else torch.cat([hint] * entries)


def prepared_hint(hint: torch.Tensor, x_shape: torch.Size, entries: int, device: torch.device, dtype: torch.dtype,
                  cache: dict, key: Any) -> torch.Tensor:
    """The hint for a UNet input of ``x_shape`` [N, C, h, w]: resized to (h x 8, w x 8),
    broadcast to N rows of ``entries`` entries, on ``device`` in ``dtype``; kept in ``cache``."""
    n, _, h, w = x_shape
    cache_key = (key, n, h, w, entries)
    if cache_key not in cache:
        resized = resize_hint(hint.float(), h * 8, w * 8)
        ready = broadcast_hint(resized, n, entries).to(device, dtype)
        cache[cache_key] = ready.expand(n, *ready.shape[1:]) if ready.shape[0] == 1 else ready
    return cache[cache_key]


class ControlSteps:
    """Wraps a denoiser ``D(x, sigma, **cond)``: gives the ``"control"`` rows of ``cond`` the
    step's sigma and one hint cache for the sampling run. Other attributes are the inner
    denoiser's."""

    def __init__(self, inner: Callable[..., torch.Tensor]) -> None:
        self.inner = inner
        self.cache: dict = {}

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        rows = cond.get("control")
        if isinstance(rows, ControlRows):
            cond["control"] = rows.at(float(torch.as_tensor(sigma).reshape(-1)[0]), self.cache)
        return self.inner(x, sigma, **cond)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _has_area(extras: dict) -> bool:
    return extras.get("area") is not None or (extras.get("mask") is not None and bool(extras.get("set_area_to_bounds")))


def controls_for_uncond(positive: list, negative: list) -> list:
    """The negative conditioning with the ControlNets of ``positive`` entries applied by
    ControlNetApply (``control_apply_to_uncond``) given to it, as ComfyUI's
    ``apply_empty_x_to_equal_area``: when no whole-latent negative entry has a ControlNet,
    the i-th such positive chain goes to the (i mod n)-th whole-latent negative entry."""
    links = [link for _, extras in positive if isinstance(extras, dict) and extras.get("control_apply_to_uncond")
             and not _has_area(extras) and (link := control_of(extras)) is not None]
    if not links:
        return negative
    whole = [i for i, (_, extras) in enumerate(negative) if isinstance(extras, dict) and not _has_area(extras)]
    if not whole or any(control_of(negative[i][1]) is not None for i in whole):
        return negative
    out = list(negative)
    for index, link in enumerate(links):
        target = whole[index % len(whole)]
        out[target] = [negative[target][0], dict(negative[target][1], control=link)]
    return out
