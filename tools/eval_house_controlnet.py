"""Evaluate the house ControlNet through the engine: does the generated shape follow the hint?

For held-out hint/caption pairs (the held-out scenes of ``house_data.split_scenes``, each at
a seeded jittered place, ``house_hints.scene_layout``) the engine runs the workflow a user
runs: CheckpointLoaderSimple + LoadImage (the shape's sketch, black on white, uploaded to
the input folder) -> Canny (default thresholds) -> ControlNetLoader ->
ControlNetApplyAdvanced (on the caption and the empty negative) -> KSampler -> VAEDecode
-> SaveImage. The saved PNG is read back (``house_measure``) and compared with the hint:

- IoU of the generated shape's pixels with the hint shape's silhouette (goal: mean >= 0.75);
- kind read back == the hint's kind (goal >= 90%);
- shape colour and background read back == the caption's (goal >= 90%, both right);
- the first ``--silhouettes`` pairs again with the shape's silhouette (white on black) as
  the hint, without Canny: the same three measures (no goal is set for them);
- strength 0 gives exactly (every pixel) the base model's txt2img image for the same seed;
- moving the hint moves the shape: the same caption without place or size, the hint shifted
  towards the far side of the image; the generated shape's IoU with the moved silhouette
  and the error of its centroid's shift (px).

Usage::

    python tools/eval_house_controlnet.py [--controlnet PATH] [--count 100] [--json out.json] [--grid g.png]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from graph import Engine, Folders, build_registry  # noqa: E402
from nodes import make_runtime  # noqa: E402
from nodes.models.folders import ModelFolders  # noqa: E402
from tools import house_data, house_hints, house_measure  # noqa: E402
from tools.eval_house_model import DEFAULT_CHECKPOINT, HouseRunner, caption_grid, txt2img_document  # noqa: E402

DEFAULT_CONTROLNET = ROOT / "models" / "controlnet" / "latentgraph-house-edges-v1.safetensors"
GOALS = {"iou": 0.75, "kind": 0.9, "colours": 0.9}
LAYOUT_SEED = 2026  # the held-out pairs' jitter


def controlnet_document(ckpt_name: str, controlnet_name: str, hint_image: str, caption: str, seed: int,
                        strength: float = 1.0, steps: int = 20, cfg: float = 5.0, canny: bool = True) -> dict:
    """The API-format workflow: txt2img guided by the Canny edges of an uploaded image, or
    (``canny=False``) by the uploaded image itself (a silhouette)."""
    document = txt2img_document(ckpt_name, caption, seed, steps, cfg, "euler", "normal")
    document.update({
        "8": {"class_type": "LoadImage", "inputs": {"image": hint_image}},
        "10": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": controlnet_name}},
        "11": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["10", 0],
            "image": ["9", 0] if canny else ["8", 0],
            "strength": strength, "start_percent": 0.0, "end_percent": 1.0}},
    })
    if canny:
        document["9"] = {"class_type": "Canny", "inputs": {"image": ["8", 0], "low_threshold": house_hints.CANNY_LOW,
                                                           "high_threshold": house_hints.CANNY_HIGH}}
    document["5"]["inputs"].update(positive=["11", 0], negative=["11", 1])
    return document


class ControlRunner(HouseRunner):
    """Runs house-model workflows with a ControlNet folder; hints are uploaded sketches."""

    def __init__(self, checkpoint: Path, controlnet: Path, workdir: Path) -> None:
        self.ckpt_name, self.controlnet_name = checkpoint.name, controlnet.name
        self.folders = Folders.under(workdir)
        self.folders.input.mkdir(parents=True, exist_ok=True)
        models = ModelFolders(workdir / "models", {"checkpoints": [checkpoint.resolve().parent],
                                                   "controlnet": [controlnet.resolve().parent]})
        self.engine = Engine(build_registry("nodes", None), make_runtime(self.folders, models=models))
        self.uploads = 0

    def upload(self, image: Image.Image) -> str:
        """Saves ``image`` in the input folder; returns its name for LoadImage."""
        self.uploads += 1
        name = f"hint_{self.uploads:04d}.png"
        image.save(self.folders.input / name)
        return name

    def guided(self, layout: house_hints.Layout, caption: str, seed: int, strength: float = 1.0,
               silhouette: bool = False) -> np.ndarray:
        """``uint8 [128, 128, 3]``: the caption generated with the Canny edges of ``layout``'s
        sketch as the hint, or (``silhouette``) with its silhouette image as it is."""
        image = house_hints.silhouette_image(layout) if silhouette else house_hints.sketch(layout)
        document = controlnet_document(self.ckpt_name, self.controlnet_name, self.upload(image), caption, seed,
                                       strength, canny=not silhouette)
        return self.run(document, "7")


def measure(pixels: np.ndarray, layout: house_hints.Layout) -> dict:
    """What one guided image shows against its hint: IoU, kind, colours, place, size, centroid."""
    reading = house_measure.read_image(pixels)
    mask = house_measure.shape_mask(pixels)[1]
    ys, xs = np.nonzero(mask)
    centroid = [float(xs.mean()) + 0.5, float(ys.mean()) + 0.5] if len(xs) else None
    scene = layout.scene
    return {
        "iou": house_hints.iou(mask, house_hints.silhouette(layout)),
        "kind": reading.shape == scene.shape,
        "colours": reading.color == scene.color and reading.background == scene.background,
        "color": reading.color == scene.color, "background": reading.background == scene.background,
        "place": reading.place == scene.place, "size": reading.size == scene.size,
        "centroid": centroid, "read": reading.__dict__,
    }


def away(value: float) -> float:
    """A shift of 36 px towards the far half of the image from ``value`` (px)."""
    return 36.0 if value < house_data.SIZE / 2 else -36.0


def evaluate(checkpoint: Path, controlnet: Path, count: int, seed: int, moves: int, zero_checks: int,
             silhouettes: int = 0, grid: Path | None = None) -> dict:
    """Every measure of the module docstring over ``count`` held-out pairs; a JSON-able report."""
    _, held_out = house_data.split_scenes()
    rng = random.Random(LAYOUT_SEED)
    layouts = [house_hints.scene_layout(scene, rng) for scene in held_out[:count]]
    rows, images, seconds = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        runner = ControlRunner(checkpoint, controlnet, Path(tmp))
        runner.guided(layouts[0], "", seed)  # warm-up: loads both models once
        for i, layout in enumerate(layouts):
            start = time.perf_counter()
            pixels = runner.guided(layout, layout.scene.caption(), seed + i)
            seconds.append(time.perf_counter() - start)
            rows.append({"caption": layout.scene.caption(), "hint": [layout.cx, layout.cy, layout.r],
                         **measure(pixels, layout)})
            images.append(pixels)
            if (i + 1) % 10 == 0:
                print(f"{i + 1}/{len(layouts)} pairs, mean IoU so far {np.mean([r['iou'] for r in rows]):.3f}",
                      file=sys.stderr, flush=True)
        zero_equal = [
            bool(np.array_equal(runner.guided(x, x.scene.caption(), seed + i, strength=0.0),
                                runner.run(txt2img_document(runner.ckpt_name, x.scene.caption(), seed + i, 20, 5.0,
                                                            "euler", "normal"), "7")))
            for i, x in enumerate(layouts[:zero_checks])
        ]
        silhouette_rows = [measure(runner.guided(x, x.scene.caption(), seed + i, silhouette=True), x)
                           for i, x in enumerate(layouts[:silhouettes])]
        moved_rows = []
        for i, layout in enumerate(layouts[:: max(1, count // max(moves, 1))][:moves]):
            scene = layout.scene
            caption = f"a {scene.color} {scene.shape} on a {scene.background} background"
            moved = layout.moved(away(layout.cx), away(layout.cy))
            before = measure(runner.guided(layout, caption, seed + 500 + i), layout)
            after = measure(runner.guided(moved, caption, seed + 500 + i), moved)
            error = None
            if before["centroid"] and after["centroid"]:
                shift = np.subtract(after["centroid"], before["centroid"])
                error = float(np.hypot(*(shift - [moved.cx - layout.cx, moved.cy - layout.cy])))
            moved_rows.append({"caption": caption, "iou_before": before["iou"], "iou_after": after["iou"],
                               "shift_error_px": error})
    summary = {name: float(np.mean([row[name] for row in rows]))
               for name in ("iou", "kind", "colours", "color", "background", "place", "size")}
    errors = [r["shift_error_px"] for r in moved_rows if r["shift_error_px"] is not None]
    report = {
        "checkpoint": str(checkpoint), "controlnet": str(controlnet), "count": len(rows), "seed": seed,
        "summary": summary, "goals": GOALS,
        "met": all(summary[name] >= goal for name, goal in GOALS.items()) and all(zero_equal),
        "strength_zero_equal": zero_equal,
        "moved": {"count": len(moved_rows),
                  "iou_after_mean": float(np.mean([r["iou_after"] for r in moved_rows])) if moved_rows else None,
                  "shift_error_px_mean": float(np.mean(errors)) if errors else None,
                  "shape_found": len(errors), "rows": moved_rows},
        "silhouette_hints": {
            "count": len(silhouette_rows),
            **{name: float(np.mean([row[name] for row in silhouette_rows])) if silhouette_rows else None
               for name in ("iou", "kind", "colours")}},
        "seconds_per_image_median": float(np.median(seconds)), "images": rows,
    }
    if grid is not None:
        grid.parent.mkdir(parents=True, exist_ok=True)
        # twelve pairs spread over the held-out list (it is ordered by kind), each as two tiles:
        # the hint the ControlNet got (the sketch's Canny edges), then the generated image
        picked = list(range(0, len(rows), max(1, len(rows) // 12)))[:12]
        edges = house_hints.canny_edges(house_hints.to_unit([house_hints.sketch(layouts[i]) for i in picked]))
        hints = [(e[0].numpy()[:, :, None].repeat(3, axis=2) * 255).astype(np.uint8) for e in edges]
        tiles = [tile for hint, i in zip(hints, picked, strict=True) for tile in (hint, images[i])]
        labels = [label for i in picked
                  for label in ("hint: Canny edges", f"{rows[i]['caption']} IoU {rows[i]['iou']:.2f}")]
        caption_grid(tiles, labels).save(grid)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--controlnet", type=Path, default=DEFAULT_CONTROLNET)
    parser.add_argument("--count", type=int, default=house_data.HELD_OUT)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--moves", type=int, default=10, help="pairs whose hint is moved")
    parser.add_argument("--zero-checks", type=int, default=5, help="pairs run again at strength 0")
    parser.add_argument("--silhouettes", type=int, default=20,
                        help="pairs run again with the silhouette image as the hint (no Canny)")
    parser.add_argument("--json", type=Path, default=None, help="write every reading here")
    parser.add_argument("--grid", type=Path, default=None, help="write a captioned image grid here")
    args = parser.parse_args(argv)
    report = evaluate(args.checkpoint, args.controlnet, args.count, args.seed, args.moves, args.zero_checks,
                      args.silhouettes, args.grid)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    print(f"{report['count']} held-out hint/caption pairs, 20 euler steps, cfg 5, Canny of the uploaded sketch")
    for name, value in report["summary"].items():
        goal = GOALS.get(name)
        print(f"  {name:<10} {value:6.3f}" + (f"  (goal >= {goal})" if goal else ""))
    print(f"  strength 0 equals the base image: {sum(report['strength_zero_equal'])}/{len(report['strength_zero_equal'])}")
    moved = report["moved"]
    print(f"  moved hints: {moved['shape_found']}/{moved['count']} shapes found, IoU with the moved silhouette "
          f"{moved['iou_after_mean']}, centroid shift error {moved['shift_error_px_mean']} px")
    shapes = report["silhouette_hints"]
    if shapes["count"]:
        print(f"  silhouette hints ({shapes['count']} pairs): IoU {shapes['iou']:.3f}, kind {shapes['kind']:.3f}, "
              f"colours {shapes['colours']:.3f}")
    print(f"  median time per image {report['seconds_per_image_median']:.2f} s; goals met: {report['met']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
