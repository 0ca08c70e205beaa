"""LatentRotate, LatentFlip, LatentCrop and ImageScaleToTotalPixels on known tensors."""

import torch

from nodes.image import ImageScaleToTotalPixels
from nodes.latent_transform import LatentCrop, LatentFlip, LatentRotate


def numbered(h=3, w=4):
    """A latent whose pixel (r, c) holds 10 * r + c in every channel."""
    grid = (10 * torch.arange(h)[:, None] + torch.arange(w)[None, :]).float()
    return {"samples": grid.expand(1, 4, h, w).clone(), "noise_mask": torch.ones(1, 1, 8, 8)}


def test_rotate_turns_clockwise_and_keeps_the_mask():
    latent = numbered()
    (quarter,) = LatentRotate().execute(latent, "90 degrees")
    assert quarter["samples"].shape == (1, 4, 4, 3)
    # Clockwise: the bottom-left pixel (20) comes to the top-left, the top-left (0) to the top-right.
    assert quarter["samples"][0, 0, 0].tolist() == [20.0, 10.0, 0.0]
    assert quarter["noise_mask"] is latent["noise_mask"]
    (half,) = LatentRotate().execute(latent, "180 degrees")
    assert torch.equal(half["samples"], torch.flip(latent["samples"], dims=[2, 3]))
    (same,) = LatentRotate().execute(latent, "none")
    assert torch.equal(same["samples"], latent["samples"])


def test_flip_mirrors_the_named_axis():
    latent = numbered()
    (vertical,) = LatentFlip().execute(latent, "x-axis: vertically")
    assert vertical["samples"][0, 0, :, 0].tolist() == [20.0, 10.0, 0.0]
    (horizontal,) = LatentFlip().execute(latent, "y-axis: horizontally")
    assert horizontal["samples"][0, 0, 0].tolist() == [3.0, 2.0, 1.0, 0.0]


def test_crop_takes_pixels_over_8_and_keeps_the_offset_inside():
    latent = numbered(16, 16)
    (cropped,) = LatentCrop().execute(latent, 64, 32, 16, 8)  # 8 x 4 latent pixels at (2, 1)
    assert cropped["samples"].shape == (1, 4, 4, 8)
    assert cropped["samples"][0, 0, 0, 0] == 12.0
    (clamped,) = LatentCrop().execute(latent, 512, 512, 1000, 1000)  # offset beyond: 8 pixels stay
    assert clamped["samples"].shape == (1, 4, 8, 8) and clamped["samples"][0, 0, 0, 0] == 88.0


def test_scale_to_total_pixels_keeps_the_aspect():
    image = torch.rand(1, 100, 200, 3)
    (scaled,) = ImageScaleToTotalPixels().execute(image, "bilinear", 0.05)  # 52428 pixels
    _, h, w, _ = scaled.shape
    assert (h, w) == (162, 324) and abs(h * w - 0.05 * 1024 * 1024) < 400
