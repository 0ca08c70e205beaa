"""The committed house ControlNet as the end-to-end oracle of ControlNet sampling: the shape
the house model draws follows the hint's edges (or silhouette), through the engine's own nodes.

Every image comes from a workflow run by the engine (LoadImage -> Canny -> ControlNetLoader
-> ControlNetApplyAdvanced -> KSampler -> VAEDecode -> SaveImage, ``tools/eval_house_controlnet``)
on ``models/controlnet/latentgraph-house-edges-v1.safetensors`` and the house model, read
back by the evaluation's pixel reader (``tools/house_measure``). The hints are held-out
scenes' shapes; the example workflows ``workflows/controlnet*.json`` run as shipped.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from graph import build_registry
from graph.ui_format import ui_to_api
from nodes.controlnet.load import load_controlnet
from tools import house_data, house_hints, house_measure
from tools.eval_house_controlnet import DEFAULT_CONTROLNET, ControlRunner, away, measure
from tools.eval_house_model import DEFAULT_CHECKPOINT, txt2img_document

pytestmark = pytest.mark.slow  # each test generates images with the house model and its ControlNet

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    assert DEFAULT_CONTROLNET.exists(), f"the house ControlNet {DEFAULT_CONTROLNET} is committed"
    return ControlRunner(DEFAULT_CHECKPOINT, DEFAULT_CONTROLNET, tmp_path_factory.mktemp("house_controlnet"))


def pairs(count: int, seed: int = 5) -> list[house_hints.Layout]:
    rng = random.Random(seed)
    return [house_hints.scene_layout(scene, rng) for scene in house_data.held_out_sample(count)]


def test_the_house_controlnet_is_a_standard_sd1_ldm_controlnet():
    assert DEFAULT_CONTROLNET.stat().st_size <= 15 * 2**20
    with safe_open(str(DEFAULT_CONTROLNET), "pt") as handle:
        assert all(key.startswith("control_model.") for key in handle.keys())
    loaded = load_controlnet(DEFAULT_CONTROLNET)
    assert loaded.family == "sd1" and loaded.hint_channels == 3


def test_held_out_hints_give_their_shape_and_the_captions_colours(runner):
    layouts = pairs(10)
    rows = [measure(runner.guided(x, x.scene.caption(), seed=3000 + i), x) for i, x in enumerate(layouts)]
    ious = [row["iou"] for row in rows]
    # The evaluation's goals over 100 pairs: mean IoU >= 0.75, kind and colours >= 90%; on
    # these ten, the same bars less a little for the sample: mean IoU >= 0.7, one miss each.
    assert np.mean(ious) >= 0.7, ious
    assert sum(not row["kind"] for row in rows) <= 1, [row["read"] for row in rows]
    assert sum(not row["colours"] for row in rows) <= 1, [row["read"] for row in rows]


def test_a_silhouette_as_the_hint_gives_its_shape(runner):
    layouts = pairs(6, seed=8)
    rows = [measure(runner.guided(x, x.scene.caption(), seed=3100 + i, silhouette=True), x)
            for i, x in enumerate(layouts)]
    # no goal is set for silhouette hints; the bar is the edge hints' bar for a small sample
    assert np.mean([row["iou"] for row in rows]) >= 0.7, [row["iou"] for row in rows]
    assert sum(not row["kind"] for row in rows) <= 1, [row["read"] for row in rows]


def test_strength_zero_gives_exactly_the_base_models_image(runner):
    (layout,) = pairs(1, seed=6)
    caption = layout.scene.caption()
    guided = runner.guided(layout, caption, seed=11, strength=0.0)
    base = runner.run(txt2img_document(runner.ckpt_name, caption, 11, 20, 5.0, "euler", "normal"), "7")
    assert np.array_equal(guided, base)
    assert not np.array_equal(runner.guided(layout, caption, seed=11), base)


def test_moving_the_hint_moves_the_shape(runner):
    for i, layout in enumerate(pairs(10, seed=7)[::4]):
        scene = layout.scene
        caption = f"a {scene.color} {scene.shape} on a {scene.background} background"  # no place, no size
        moved = layout.moved(away(layout.cx), away(layout.cy))
        before = measure(runner.guided(layout, caption, seed=40 + i), layout)
        after = measure(runner.guided(moved, caption, seed=40 + i), moved)
        shift = np.subtract(after["centroid"], before["centroid"])
        assert np.hypot(*(shift - [moved.cx - layout.cx, moved.cy - layout.cy])) < 6.0, (caption, shift)
        assert after["iou"] >= 0.6, (caption, after)


def _upload(runner: ControlRunner, name: str, image: Image.Image) -> None:
    runner.folders.input.mkdir(parents=True, exist_ok=True)
    image.save(runner.folders.input / name)


def _workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


@pytest.mark.parametrize("name", ["controlnet_canny", "controlnet_mix", "controlnet_inpaint"])
def test_the_ui_twin_of_each_controlnet_workflow_converts_to_it(name):
    strip = lambda doc: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in doc.items()}  # noqa: E731
    assert strip(ui_to_api(_workflow(f"{name}.json"), build_registry("nodes", None))) == strip(
        _workflow(f"{name}_api.json"))


def test_the_canny_workflow_traces_the_uploaded_image(runner):
    document = _workflow("controlnet_canny_api.json")
    assert document["6"]["inputs"]["text"] == "a green star on a white background"
    layout = house_hints.Layout(house_data.Scene("star", "green", "white", "top right", "large"), 84.0, 44.0, 22.0)
    _upload(runner, "controlnet_sketch.png", house_hints.sketch(layout))
    found = measure(runner.run(document, "9"), layout)
    assert found["kind"] and found["colours"] and found["iou"] >= 0.6, found


def test_the_mixing_workflow_follows_both_hints_where_they_agree(runner):
    document = _workflow("controlnet_mix_api.json")
    layout = house_hints.Layout(house_data.Scene("ring", "orange", "blue", "bottom left", "large"), 44.0, 82.0, 22.0)
    _upload(runner, "controlnet_sketch.png", house_hints.sketch(layout))
    painted = house_data.Scene("ring", "white", "black", layout.scene.place, layout.scene.size)
    _upload(runner, "controlnet_picture.png", house_hints.drawing(house_hints.Layout(painted, 44.0, 82.0, 22.0)))
    found = measure(runner.run(document, "9"), layout)
    assert found["kind"] and found["colours"] and found["iou"] >= 0.6, found


def test_the_inpaint_workflow_places_the_shape_inside_the_mask_only(runner):
    picture = np.zeros((128, 128, 4), dtype=np.uint8)
    picture[..., :3], picture[..., 3] = house_data.COLORS["blue"], 255
    picture[32:96, 32:96, 3] = 0  # the transparent square is repainted
    _upload(runner, "inpaint_example.png", Image.fromarray(picture, "RGBA"))
    layout = house_hints.Layout(house_data.Scene("square", "yellow", "blue", "center", "small"), 70.0, 58.0, 12.0)
    _upload(runner, "controlnet_sketch.png", house_hints.sketch(layout))
    document = _workflow("controlnet_inpaint_api.json")
    assert document["6"]["inputs"]["text"] == "a small yellow square on a blue background"
    pixels = runner.run(document, "9")
    outside = np.ones((128, 128), dtype=bool)
    outside[32:96, 32:96] = False
    assert (pixels[outside] == picture[..., :3][outside]).all()
    found = measure(pixels, layout)
    assert found["kind"] and found["colours"] and found["iou"] >= 0.6, found
    assert house_measure.read_image(pixels).color == "yellow"
