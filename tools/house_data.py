"""The house model's world: procedurally drawn, captioned 128x128 images of one shape.

Every image is one shape (circle, square, triangle, star, ring) of one colour on a plain
background of another colour, small or large, at one of nine places; its caption says
exactly that, e.g. "a small red circle on a blue background, top left". The same module
draws the training set (``tools/train_house_model.py``), picks the held-out evaluation
captions and renders the reference shapes the evaluation measures against
(``tools/eval_house_model.py``).

A ``Scene`` is the attribute tuple; ``render`` draws it with a little seeded jitter of
place and size so the model learns regions, not pixels. Rendering is supersampled 2x and
downscaled, so edges are anti-aliased like real images.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 128  # pixels, square
SHAPES = ("circle", "square", "triangle", "star", "ring")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 225),
    "purple": (135, 45, 185),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
# Column / row of each place as fractions of the image side.
PLACES: dict[str, tuple[float, float]] = {
    "top left": (0.25, 0.25),
    "top": (0.5, 0.25),
    "top right": (0.75, 0.25),
    "left": (0.25, 0.5),
    "center": (0.5, 0.5),
    "right": (0.75, 0.5),
    "bottom left": (0.25, 0.75),
    "bottom": (0.5, 0.75),
    "bottom right": (0.75, 0.75),
}
SIZES: dict[str, tuple[float, float]] = {"small": (10.0, 13.0), "large": (20.0, 24.0)}  # radius range, px
JITTER = 4.0  # max shift of the centre, px
HELD_OUT = 100  # scenes never shown in training, used by the evaluation


@dataclass(frozen=True)
class Scene:
    """What one image shows; ``caption`` says it in words."""

    shape: str
    color: str
    background: str
    place: str
    size: str

    def caption(self) -> str:
        return f"a {self.size} {self.color} {self.shape} on a {self.background} background, {self.place}"

    def partial_caption(self, rng: random.Random) -> str:
        """The caption with some of size, background and place left out (shape and colour stay)."""
        size = f"{self.size} " if rng.random() < 0.5 else ""
        text = f"a {size}{self.color} {self.shape}"
        if rng.random() < 0.5:
            text += f" on a {self.background} background"
        if rng.random() < 0.5:
            text += f", {self.place}"
        return text


def all_scenes() -> list[Scene]:
    """Every attribute combination with distinct shape and background colours (5040)."""
    return [
        Scene(shape, color, background, place, size)
        for shape, color, background, place, size in itertools.product(SHAPES, COLORS, COLORS, PLACES, SIZES)
        if color != background
    ]


def split_scenes(seed: int = 0) -> tuple[list[Scene], list[Scene]]:
    """``(training scenes, held-out scenes)``: a fixed seeded choice of ``HELD_OUT`` scenes."""
    scenes = all_scenes()
    held = set(random.Random(seed).sample(range(len(scenes)), HELD_OUT))
    train = [s for i, s in enumerate(scenes) if i not in held]
    return train, [scenes[i] for i in sorted(held)]


def held_out_sample(count: int) -> list[Scene]:
    """``count`` held-out scenes spread over the held-out list, which is sorted by shape, so
    that every kind appears in a small sample."""
    _, held_out = split_scenes()
    return held_out[:: max(1, len(held_out) // count)][:count]


def shape_outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Polygon vertices for polygon shapes (square, triangle, star); None for round ones."""
    if shape == "square":
        h = r * 0.85
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        # Equilateral, pointing up, centred on its centroid.
        return [(cx + r * math.cos(a), cy - r * math.sin(a)) for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy - radius * math.sin(angle)))
        return points
    return None


def draw_shape(
    shape: str, cx: float, cy: float, r: float, fill: tuple[int, int, int], background: tuple[int, int, int],
    size: int = SIZE, supersample: int = 2,
) -> Image.Image:
    """An RGB ``size`` x ``size`` image of one shape centred at ``(cx, cy)`` px with radius ``r`` px."""
    s = supersample
    image = Image.new("RGB", (size * s, size * s), background)
    draw = ImageDraw.Draw(image)
    outline = shape_outline(shape, cx * s, cy * s, r * s)
    if outline is not None:
        draw.polygon(outline, fill=fill)
    else:
        draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=fill)
        if shape == "ring":
            inner = r * 0.55
            draw.ellipse([(cx - inner) * s, (cy - inner) * s, (cx + inner) * s, (cy + inner) * s], fill=background)
    return image.resize((size, size), Image.Resampling.LANCZOS) if s > 1 else image


def render(scene: Scene, rng: random.Random) -> Image.Image:
    """Draw ``scene`` with seeded jitter of centre (``JITTER`` px) and radius (within ``SIZES``)."""
    fx, fy = PLACES[scene.place]
    cx = fx * SIZE + rng.uniform(-JITTER, JITTER)
    cy = fy * SIZE + rng.uniform(-JITTER, JITTER)
    r = rng.uniform(*SIZES[scene.size])
    return draw_shape(scene.shape, cx, cy, r, COLORS[scene.color], COLORS[scene.background])


def to_array(image: Image.Image) -> np.ndarray:
    """``uint8 [H, W, 3]`` pixels of an image."""
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
