"""Running an image function (a VAE, an upscale model) over overlapping tiles and blending
them without seams.

A tile's output is weighted by a ramp that rises linearly across the overlap it shares
with a neighbour (and is flat at the image border), and the weighted tiles are summed and
divided by the summed weights. Where two tiles overlap, the result fades from one to the
other, so no tile edge shows as a step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length``, neighbours sharing at
    least ``overlap``; the last tile ends at ``length``. Offsets are multiples of ``align``
    when ``length``, ``tile`` and ``overlap`` are."""
    if length <= tile:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _ramp(size: int, fade: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D weights: 1 in the middle, rising over ``fade`` samples on sides that overlap."""
    position = torch.arange(size, dtype=torch.float32) + 0.5
    weight = torch.ones(size)
    if fade > 0:
        if not at_start:
            weight = torch.minimum(weight, position / fade)
        if not at_end:
            weight = torch.minimum(weight, (size - position) / fade)
    return weight


def tiled_map(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
              scale: float, align: int = 1, on_tile: Callable[[], None] | None = None) -> torch.Tensor:
    """Applies ``fn`` ([B, C, h, w] -> [B, C', h * scale, w * scale]) to ``x`` [B, C, H, W]
    tile by tile (``tile`` x ``tile``, sharing ``overlap``, in ``x``'s pixels) and blends
    the outputs. ``scale`` is 8 for a VAE decoder, 1/8 for an encoder, 4 for a 4x upscaler.
    ``on_tile()`` is called after each tile (it may raise to interrupt)."""
    _, _, height, width = x.shape
    tile_h, tile_w = min(tile, height), min(tile, width)
    rows = tile_starts(height, tile_h, overlap, align)
    cols = tile_starts(width, tile_w, overlap, align)
    fade = round(overlap * scale)
    out: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    for top in rows:
        for left in cols:
            piece = fn(x[:, :, top:top + tile_h, left:left + tile_w])
            if out is None:
                out = torch.zeros((x.shape[0], piece.shape[1], round(height * scale), round(width * scale)),
                                  dtype=piece.dtype, device=piece.device)
                weights = torch.zeros((1, 1, *out.shape[-2:]), dtype=piece.dtype, device=piece.device)
            assert weights is not None
            out_top, out_left = round(top * scale), round(left * scale)
            ph, pw = piece.shape[-2:]
            weight = (_ramp(ph, fade, top == 0, top + tile_h >= height)[:, None]
                      * _ramp(pw, fade, left == 0, left + tile_w >= width)[None, :]).to(piece.device, piece.dtype)
            out[:, :, out_top:out_top + ph, out_left:out_left + pw] += piece * weight
            weights[:, :, out_top:out_top + ph, out_left:out_left + pw] += weight
            if on_tile is not None:
                on_tile()
    assert out is not None and weights is not None
    return out / weights
