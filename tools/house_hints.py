"""Hints for the house ControlNet: where a shape is drawn, its edge map and its silhouette.

A :class:`Layout` is a house scene (``tools.house_data.Scene``: kind, colours, place and
size words) with the exact centre and radius of the shape in pixels. From it:

- :func:`drawing`: the image the house world draws (shape colour on background colour);
- :func:`sketch`: the same shape black on white, the kind of picture a user uploads for
  the ``Canny`` node (its edges do not depend on the caption's colours, some pairs of
  which have nearly equal brightness and give Canny almost no edge);
- :func:`silhouette_image`: the shape filled white on black, the other kind of hint (a
  mask, given to the ControlNet as it is);
- :func:`silhouette`: the shape's pixels as a boolean mask, what the evaluation compares
  the generated shape with;
- :func:`canny_edges`: kornia's Canny with the thresholds the engine's ``Canny`` node uses
  by default (``CANNY_LOW``, ``CANNY_HIGH``; ``tests/test_house_controlnet.py`` checks they
  are the node's), so a hint made here equals the node's output for the same image.

Layouts come either from the house world's nine places and two sizes (:func:`scene_layout`,
as ``house_data.render`` draws them) or anywhere in the image at any radius between the
small and large ranges (:func:`free_layout`), so that the hint, not the caption, says where.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from tools import house_data, house_measure

CANNY_LOW, CANNY_HIGH = 0.4, 0.8  # the Canny node's default thresholds (nodes/controlnet_nodes.py)
MARGIN = 3.0  # px kept between a free layout's shape and the image border
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


@dataclass(frozen=True)
class Layout:
    """A scene with its shape's centre ``(cx, cy)`` and radius ``r``, in pixels of the 128x128 image."""

    scene: house_data.Scene
    cx: float
    cy: float
    r: float

    def moved(self, dx: float, dy: float) -> Layout:
        """The same shape shifted by ``(dx, dy)`` px; the scene's place word follows the centre."""
        cx, cy = self.cx + dx, self.cy + dy
        scene = house_data.Scene(self.scene.shape, self.scene.color, self.scene.background,
                                 house_measure.place_name(cx, cy), self.scene.size)
        return Layout(scene, cx, cy, self.r)


def scene_layout(scene: house_data.Scene, rng: random.Random) -> Layout:
    """Where ``house_data.render`` would draw ``scene`` (the same jitter, drawn from ``rng``)."""
    fx, fy = house_data.PLACES[scene.place]
    cx = fx * house_data.SIZE + rng.uniform(-house_data.JITTER, house_data.JITTER)
    cy = fy * house_data.SIZE + rng.uniform(-house_data.JITTER, house_data.JITTER)
    return Layout(scene, cx, cy, rng.uniform(*house_data.SIZES[scene.size]))


def free_layout(shape: str, color: str, background: str, rng: random.Random) -> Layout:
    """A shape anywhere in the image, radius anywhere from the smallest small to the largest
    large; the scene's place and size words are those the evaluation's reader would give it."""
    low, high = house_data.SIZES["small"][0], house_data.SIZES["large"][1]
    r = rng.uniform(low, high)
    cx = rng.uniform(r + MARGIN, house_data.SIZE - r - MARGIN)
    cy = rng.uniform(r + MARGIN, house_data.SIZE - r - MARGIN)
    size = "small" if r < house_measure.SIZE_THRESHOLD else "large"
    scene = house_data.Scene(shape, color, background, house_measure.place_name(cx, cy), size)
    return Layout(scene, cx, cy, r)


def drawing(layout: Layout) -> Image.Image:
    """The house world's picture of ``layout``: ``uint8`` RGB, 128x128."""
    s = layout.scene
    return house_data.draw_shape(s.shape, layout.cx, layout.cy, layout.r, house_data.COLORS[s.color],
                                 house_data.COLORS[s.background])


def sketch(layout: Layout) -> Image.Image:
    """The shape of ``layout`` drawn black on white (a hint source whatever the colours)."""
    return house_data.draw_shape(layout.scene.shape, layout.cx, layout.cy, layout.r, BLACK, WHITE)


def silhouette_image(layout: Layout) -> Image.Image:
    """The shape of ``layout`` filled white on black: a silhouette hint, used as it is (no Canny)."""
    return house_data.draw_shape(layout.scene.shape, layout.cx, layout.cy, layout.r, WHITE, BLACK)


def silhouette(layout: Layout) -> np.ndarray:
    """``bool [128, 128]``: the pixels of ``layout``'s shape (at least half covered)."""
    return np.asarray(silhouette_image(layout))[:, :, 0] > 127


def canny_edges(images: torch.Tensor) -> torch.Tensor:
    """``float [B, 1, H, W]`` 0/1 edges of ``float [B, 3, H, W]`` 0..1 images: the Canny node's
    computation (kornia, default thresholds) before it repeats the edges over three channels."""
    from kornia.filters import canny

    return canny(images.float(), CANNY_LOW, CANNY_HIGH)[1]


def to_unit(images: list[Image.Image]) -> torch.Tensor:
    """PIL images -> ``float [B, 3, H, W]`` in 0..1 (what LoadImage gives, channels first)."""
    array = np.stack([house_data.to_array(im) for im in images]).astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = float((a | b).sum())
    return float((a & b).sum()) / union if union else 1.0
