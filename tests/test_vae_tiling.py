"""Tile blending for the tiled VAE nodes, with stand-in coders whose output depends on
their tile (as a VAE's GroupNorm statistics do), so seams would show."""

import torch
import torch.nn.functional as F

from nodes.sd.tiling import tile_starts, tiled_map


def biased_decoder(z):
    """Upsamples by 8 and adds the tile's mean: a per-tile offset like a VAE's normalisation."""
    return F.interpolate(z, scale_factor=8, mode="bilinear", align_corners=False) + z.mean()


def largest_column_step(image):
    return float((image[..., 1:] - image[..., :-1]).abs().max())


def test_tile_starts_cover_the_length_with_the_overlap():
    assert tile_starts(32, 8, 4) == [0, 4, 8, 12, 16, 20, 24]
    assert tile_starts(30, 8, 2) == [0, 6, 12, 18, 22]
    assert tile_starts(8, 16, 4) == [0]
    assert tile_starts(200, 64, 24, align=8) == [0, 40, 80, 120, 136]


def test_overlapping_tiles_blend_without_seams():
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(2, 3, 8, 32).contiguous()
    whole = biased_decoder(ramp)
    blended = tiled_map(biased_decoder, ramp, tile=8, overlap=4, scale=8)
    pasted = tiled_map(biased_decoder, ramp, tile=8, overlap=0, scale=8)
    assert blended.shape == pasted.shape == whole.shape == (2, 3, 64, 256)
    smooth = largest_column_step(whole)
    assert largest_column_step(pasted) > 10 * smooth  # tiles side by side: a step at every border
    assert largest_column_step(blended) < 3 * smooth  # blended: the offsets fade across the overlap


def test_tiles_of_a_tile_independent_coder_reassemble_exactly():
    latents = torch.randn(1, 4, 20, 28)
    nearest = lambda z: F.interpolate(z, scale_factor=8, mode="nearest")  # noqa: E731
    assert torch.allclose(tiled_map(nearest, latents, 8, 4, scale=8), nearest(latents), atol=1e-6)
    pixels = torch.randn(1, 3, 96, 160)
    pool = lambda p: F.avg_pool2d(p, 8)  # noqa: E731
    assert torch.allclose(tiled_map(pool, pixels, 64, 32, scale=1 / 8, align=8), pool(pixels), atol=1e-6)
