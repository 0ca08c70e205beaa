"""Evaluate the house model on captions it never saw: do the pixels show what was asked?

For each of the held-out scenes (``house_data.split_scenes``: 100 attribute combinations
never drawn in training), the txt2img workflow runs through the engine exactly as a user
runs it (CheckpointLoaderSimple -> CLIPTextEncode -> KSampler -> VAEDecode -> SaveImage),
one seed per caption, and ``house_measure.read_image`` reads the saved PNG back. Reported:
shape colour, background colour, shape kind, place and size accuracy, plus the time per
image. ``--grid`` writes a captioned grid of the first images.

Usage::

    python tools/eval_house_model.py [--checkpoint PATH] [--count 100] [--grid docs/house_grid.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from graph import Engine, Folders, build_registry  # noqa: E402
from nodes import make_runtime  # noqa: E402
from nodes.models.folders import ModelFolders  # noqa: E402
from tools import house_data, house_measure  # noqa: E402

DEFAULT_CHECKPOINT = ROOT / "models" / "checkpoints" / "latentgraph-house-v1.safetensors"


def txt2img_document(ckpt_name: str, caption: str, seed: int, steps: int, cfg: float, sampler: str,
                     scheduler: str) -> dict:
    """The API-format txt2img workflow for one caption (128x128, empty negative prompt)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": caption, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage",
              "inputs": {"width": house_data.SIZE, "height": house_data.SIZE, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"filename_prefix": "eval", "images": ["6", 0]}},
    }


class HouseRunner:
    """Runs txt2img workflows on one checkpoint through the engine; returns the saved pixels."""

    def __init__(self, checkpoint: Path, workdir: Path) -> None:
        self.ckpt_name = checkpoint.name
        self.folders = Folders.under(workdir)
        models = ModelFolders(workdir / "models", {"checkpoints": [checkpoint.resolve().parent]})
        self.engine = Engine(build_registry("nodes", None), make_runtime(self.folders, models=models))

    def generate(self, caption: str, seed: int, steps: int = 20, cfg: float = 5.0, sampler: str = "euler",
                 scheduler: str = "normal") -> np.ndarray:
        """``uint8 [128, 128, 3]`` pixels for one caption."""
        return self.run(txt2img_document(self.ckpt_name, caption, seed, steps, cfg, sampler, scheduler), "7")

    def run(self, document: dict, save_node: str) -> np.ndarray:
        """Run an API-format workflow; ``uint8 [H, W, 3]`` pixels of the one image ``save_node`` saved."""
        checked = self.engine.prepare(document)
        if not checked.ok:
            raise RuntimeError(f"workflow invalid: {checked.response()}")
        result = self.engine.execute(checked.plan)
        if result.status != "success":
            raise RuntimeError(f"generation failed: {result.error}")
        (entry,) = result.outputs[save_node]["images"]
        path = self.folders.output / entry["subfolder"] / entry["filename"]
        return house_data.to_array(Image.open(path))


def caption_grid(images: list[np.ndarray], captions: list[str], columns: int = 6) -> Image.Image:
    """Images in a grid, each with its caption (wrapped over three lines) underneath."""
    tile, text_h = house_data.SIZE, 42
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * (tile + 8), rows * (tile + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, (pixels, caption) in enumerate(zip(images, captions, strict=True)):
        x, y = (i % columns) * (tile + 8), (i // columns) * (tile + text_h)
        grid.paste(Image.fromarray(pixels), (x, y))
        words, lines = caption.split(), [""]
        for word in words:
            if len(lines[-1]) + len(word) > 22:
                lines.append("")
            lines[-1] = (lines[-1] + " " + word).strip()
        draw.multiline_text((x + 1, y + tile + 1), "\n".join(lines[:3]), fill=(0, 0, 0), spacing=1)
    return grid


def evaluate(checkpoint: Path, count: int, seed: int, steps: int, cfg: float, grid: Path | None) -> dict:
    _, held_out = house_data.split_scenes()
    scenes = held_out[:count]
    images, readings, rows, seconds = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        runner = HouseRunner(checkpoint, Path(tmp))
        runner.generate("", seed)  # warm-up: loads the checkpoint once
        for i, scene in enumerate(scenes):
            start = time.perf_counter()
            pixels = runner.generate(scene.caption(), seed + i, steps=steps, cfg=cfg)
            seconds.append(time.perf_counter() - start)
            reading = house_measure.read_image(pixels)
            readings.append(reading)
            images.append(pixels)
            rows.append({"caption": scene.caption(), "read": reading.__dict__})
    accuracy = house_measure.accuracy(readings, scenes)
    if grid is not None:
        grid.parent.mkdir(parents=True, exist_ok=True)
        caption_grid(images[:24], [s.caption() for s in scenes[:24]]).save(grid)
    return {
        "checkpoint": str(checkpoint), "count": len(scenes), "steps": steps, "cfg": cfg, "seed": seed,
        "accuracy": accuracy, "seconds_per_image_median": float(np.median(seconds)), "images": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--count", type=int, default=house_data.HELD_OUT)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--grid", type=Path, default=None, help="write a captioned image grid here")
    parser.add_argument("--json", type=Path, default=None, help="write every reading here")
    args = parser.parse_args(argv)
    report = evaluate(args.checkpoint, args.count, args.seed, args.steps, args.cfg, args.grid)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    print(f"{report['count']} held-out captions, {args.steps} steps, cfg {args.cfg}, euler/normal")
    for name, value in report["accuracy"].items():
        print(f"  {name:<10} {value:6.1%}")
    print(f"  median time per image {report['seconds_per_image_median']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
