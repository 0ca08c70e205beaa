"""Run an image-to-image model over overlapping tiles and blend them without seams.

Each image is cut into ``tile`` x ``tile`` pieces that overlap by at least ``overlap``
pixels (the last row/column is aligned to the image edge, so every tile is full size);
each tile's output is weighted by a mask that is 1 inside and ramps linearly to near 0
across the overlap on every side that has a neighbour, and the weighted sum is divided by
the summed weights. A model whose output at a pixel depends only on nearby pixels (within
the overlap) gives the untiled result; the ramps hide what little differs at the borders.
Peak memory is one tile's activations plus the output image (on the CPU), whatever the
image size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger("latentgraph.upscale")

TileFn = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]
MIN_TILE = 128  # below this, out-of-memory is an error rather than another retry


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``size`` pixels; neighbours overlap by >= ``overlap``."""
    if size <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles one ``height`` x ``width`` image is cut into."""
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def _ramp(length: int, fade: int, before: bool, after: bool) -> torch.Tensor:
    """1-D weights: 1, ramping from 1/(fade+1) up over ``fade`` pixels on the sides that have a neighbour."""
    w = torch.ones(length)
    fade = min(fade, length // 2)
    if fade > 0:
        up = torch.arange(1, fade + 1, dtype=torch.float32) / (fade + 1)
        if before:
            w[:fade] = torch.minimum(w[:fade], up)
        if after:
            w[-fade:] = torch.minimum(w[-fade:], up.flip(0))
    return w


def tiled_apply(image: torch.Tensor, fn: TileFn, *, scale: int, out_channels: int, tile: int = 512,
                overlap: int = 32, progress: Progress | None = None) -> torch.Tensor:
    """Apply ``fn`` to ``image`` [B, C, H, W] tile by tile -> [B, out_channels, H*scale, W*scale] float32, CPU.

    ``fn`` maps a [1, C, h, w] tile to [1, out_channels, h*scale, w*scale]. ``progress(done,
    total)`` is called after every tile (it may raise to interrupt).
    """
    batch, _, height, width = image.shape
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    total, done = batch * len(ys) * len(xs), 0
    out = torch.zeros(batch, out_channels, height * scale, width * scale)
    weight = torch.zeros(1, 1, height * scale, width * scale)
    fade = overlap * scale
    for b in range(batch):
        for y in ys:
            wy = _ramp(th * scale, fade, y > 0, y + th < height)
            for x in xs:
                result = fn(image[b:b + 1, :, y:y + th, x:x + tw])
                expected = (1, out_channels, th * scale, tw * scale)
                if tuple(result.shape) != expected:
                    raise ValueError(f"the model returned {tuple(result.shape)} for a tile, expected {expected}")
                mask = wy[:, None] * _ramp(tw * scale, fade, x > 0, x + tw < width)[None, :]
                region = (slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale))
                out[b:b + 1, :, region[0], region[1]] += result.float().cpu() * mask
                if b == 0:
                    weight[:, :, region[0], region[1]] += mask
                done += 1
                if progress is not None:
                    progress(done, total)
    return out / weight


def _is_out_of_memory(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def tiled_apply_fitting(image: torch.Tensor, fn: TileFn, *, scale: int, out_channels: int, tile: int = 512,
                        overlap: int = 32, progress: Progress | None = None) -> torch.Tensor:
    """``tiled_apply`` that halves the tile size after an out-of-memory error (as ComfyUI
    does), down to ``MIN_TILE``; below that the error is raised with a clear message.
    Progress restarts from 0 with each new tile size."""
    while True:
        try:
            return tiled_apply(image, fn, scale=scale, out_channels=out_channels, tile=tile, overlap=overlap,
                               progress=progress)
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if tile // 2 < MIN_TILE:
                raise MemoryError(f"out of memory upscaling even with {tile}x{tile} tiles: {exc}") from exc
            log.warning("out of memory with %dx%d tiles; retrying with %dx%d", tile, tile, tile // 2, tile // 2)
            tile //= 2
