"""Read back what a 128x128 house-model image shows: colours, shape kind, place and size.

Used by ``tools/eval_house_model.py`` and the end-to-end tests as the oracle. It only
looks at pixels:

- background: the median colour of a 4-pixel frame around the image, nearest named colour;
- the shape: pixels far (> ``SHAPE_DISTANCE`` in RGB) from that background colour; its
  colour is the median of the shape's inner pixels (edges are anti-aliased), nearest named
  colour;
- place: the shape's centroid in a 3x3 grid of the image;
- kind: each shape kind is drawn at the centroid with the radius that gives the measured
  area, and the one overlapping the found shape best (intersection over union) wins;
- size: "small" or "large" from that radius.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tools import house_data

SHAPE_DISTANCE = 80.0  # RGB distance from the background that counts as shape
FRAME = 4  # px of border used for the background colour
# Area of each kind for radius 1, as house_data draws them (square half-side 0.85 r,
# star inner radius 0.45 r, ring inner radius 0.55 r).
UNIT_AREA = {
    "circle": math.pi,
    "square": (2 * 0.85) ** 2,
    "triangle": 3 * math.sqrt(3) / 4,
    "star": 5 * 0.45 * math.sin(math.pi / 5),
    "ring": math.pi * (1 - 0.55**2),
}
SIZE_THRESHOLD = (house_data.SIZES["small"][1] + house_data.SIZES["large"][0]) / 2  # px radius
FIELDS = ("color", "background", "shape", "place", "size")  # what a Reading says of a Scene


@dataclass(frozen=True)
class Reading:
    """What an image shows, as names from ``house_data``; ``shape`` is None when nothing stands out."""

    background: str
    color: str | None
    shape: str | None
    place: str | None
    size: str | None


def nearest_color(rgb: np.ndarray) -> str:
    """The named colour closest to ``rgb`` (3 values, 0..255)."""
    names = list(house_data.COLORS)
    palette = np.array([house_data.COLORS[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(((palette - rgb.astype(np.float32)) ** 2).sum(axis=1)))]


def _erode(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def place_name(x: float, y: float, size: int = house_data.SIZE) -> str:
    """The 3x3 grid place of a point in pixels."""
    col = min(int(3 * x / size), 2)
    row = min(int(3 * y / size), 2)
    for name, (fx, fy) in house_data.PLACES.items():
        if min(int(3 * fx), 2) == col and min(int(3 * fy), 2) == row:
            return name
    raise AssertionError("PLACES covers the 3x3 grid")


def _kind(mask: np.ndarray, cx: float, cy: float) -> tuple[str, float]:
    """Best-overlapping shape kind and its radius (px)."""
    area = float(mask.sum())
    best, best_iou, best_r = "circle", -1.0, 0.0
    for kind, unit in UNIT_AREA.items():
        r = math.sqrt(area / unit)
        template = house_data.draw_shape(kind, cx, cy, r, (255, 255, 255), (0, 0, 0), size=mask.shape[0])
        drawn = np.asarray(template)[:, :, 0] > 127
        iou = float((drawn & mask).sum()) / max(float((drawn | mask).sum()), 1.0)
        if iou > best_iou:
            best, best_iou, best_r = kind, iou, r
    return best, best_r


def shape_mask(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(background RGB [3], bool [H, W] shape mask)`` of a ``uint8 [H, W, 3]`` image: the
    median colour of the frame, and the pixels farther than ``SHAPE_DISTANCE`` from it."""
    pixels = pixels.astype(np.float32)
    frame = np.concatenate([
        pixels[:FRAME].reshape(-1, 3), pixels[-FRAME:].reshape(-1, 3),
        pixels[:, :FRAME].reshape(-1, 3), pixels[:, -FRAME:].reshape(-1, 3),
    ])
    background_rgb = np.median(frame, axis=0)
    return background_rgb, np.sqrt(((pixels - background_rgb) ** 2).sum(axis=-1)) > SHAPE_DISTANCE


def read_image(pixels: np.ndarray) -> Reading:
    """Measure one ``uint8 [H, W, 3]`` image."""
    background_rgb, mask = shape_mask(pixels)
    pixels = pixels.astype(np.float32)
    background = nearest_color(background_rgb)
    if mask.sum() < 12:
        return Reading(background, None, None, None, None)
    inner = _erode(mask)
    color = nearest_color(np.median(pixels[inner if inner.sum() >= 4 else mask], axis=0))
    ys, xs = np.nonzero(mask)
    cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5
    kind, radius = _kind(mask, cx, cy)
    size = "small" if radius < SIZE_THRESHOLD else "large"
    return Reading(background, color, kind, place_name(cx, cy, pixels.shape[1]), size)


def accuracy(readings: list[Reading], scenes: list[house_data.Scene]) -> dict[str, float]:
    """Per field of ``FIELDS``: the share of ``readings`` that say what their scene shows."""
    return {
        name: sum(getattr(r, name) == getattr(s, name) for r, s in zip(readings, scenes, strict=True)) / len(scenes)
        for name in FIELDS
    }
