"""Run an image-to-image model over overlapping tiles and blend them without seams.

Each image is cut into ``tile`` x ``tile`` pieces that overlap by at least ``overlap``
pixels and blended as the tiled VAE nodes do (``nodes.sd.tiling.tiled_map``: linear ramps
across each overlap, weighted sum divided by the summed weights). A model whose output at
a pixel depends only on nearby pixels (within the overlap) gives the untiled result; the
ramps hide what little differs at the borders.
Peak memory is one tile's activations plus the output image (on the CPU), whatever the
image size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from nodes.sd.tiling import tile_starts, tiled_map

log = logging.getLogger("latentgraph.upscale")

TileFn = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]
MIN_TILE = 128  # below this, out-of-memory is an error rather than another retry


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles one ``height`` x ``width`` image is cut into."""
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def tiled_apply(image: torch.Tensor, fn: TileFn, *, scale: int, out_channels: int, tile: int = 512,
                overlap: int = 32, progress: Progress | None = None) -> torch.Tensor:
    """Apply ``fn`` to ``image`` [B, C, H, W] tile by tile -> [B, out_channels, H*scale, W*scale] float32, CPU.

    ``fn`` maps a [1, C, h, w] tile to [1, out_channels, h*scale, w*scale]. ``progress(done,
    total)`` is called after every tile (it may raise to interrupt).
    """
    batch, _, height, width = image.shape
    th, tw = min(tile, height), min(tile, width)
    expected = (1, out_channels, th * scale, tw * scale)
    total, done = batch * tile_count(height, width, tile, overlap), 0

    def run_tile(piece: torch.Tensor) -> torch.Tensor:
        result = fn(piece)
        if tuple(result.shape) != expected:
            raise ValueError(f"the model returned {tuple(result.shape)} for a tile, expected {expected}")
        return result.float().cpu()

    def tile_done() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    # One image at a time: peak memory is one tile's activations, whatever the batch size.
    return torch.cat([tiled_map(run_tile, image[b:b + 1], tile, overlap, scale, on_tile=tile_done)
                      for b in range(batch)])


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
