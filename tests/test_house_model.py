"""The committed house model as the end-to-end oracle: what the prompt asks for is what the pixels show.

These run the real txt2img workflow (CheckpointLoaderSimple -> CLIPTextEncode -> KSampler
-> VAEDecode -> SaveImage) through the engine on ``models/checkpoints/latentgraph-house-v1``
and read the saved PNG back with the evaluation's pixel reader (``tools/house_measure``,
itself checked against drawn ground truth in ``test_house_tools.py``). The captions are
held-out scenes the model never saw in training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nodes.models.loader import load_checkpoint
from tools import house_data, house_measure
from tools.eval_house_model import DEFAULT_CHECKPOINT, HouseRunner

pytestmark = pytest.mark.slow  # each test generates images with the house model

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    assert DEFAULT_CHECKPOINT.exists(), f"the house model {DEFAULT_CHECKPOINT} is committed; is it an LFS pointer?"
    return HouseRunner(DEFAULT_CHECKPOINT, tmp_path_factory.mktemp("house"))


def test_the_house_model_is_a_plain_sd1_checkpoint():
    assert DEFAULT_CHECKPOINT.stat().st_size <= 30 * 2**20
    loaded = load_checkpoint(DEFAULT_CHECKPOINT)
    assert loaded.family == "sd1" and loaded.prediction_type == "epsilon"
    assert loaded.unet.config.in_channels == 4 and loaded.vae.config.latent_channels == 4


def test_held_out_captions_give_the_colours_kind_and_place_asked_for(runner):
    scenes = house_data.held_out_sample(10)
    readings = [house_measure.read_image(runner.generate(s.caption(), seed=2000 + i)) for i, s in enumerate(scenes)]
    wrong = {
        name: [(s.caption(), getattr(r, name)) for s, r in zip(scenes, readings, strict=True)
               if getattr(r, name) != getattr(s, name)]
        for name in ("color", "background", "shape", "place")
    }
    # The evaluation's goals are colours >= 90%, kind and place >= 80% over 100 captions;
    # on these ten the same bars allow one miss for colours and two for kind and place.
    assert len(wrong["background"]) <= 1 and len(wrong["color"]) <= 1, wrong
    assert len(wrong["shape"]) <= 2 and len(wrong["place"]) <= 2, wrong


def test_changing_only_the_colour_word_changes_only_that_colour(runner):
    readings = {
        color: house_measure.read_image(runner.generate(f"a large {color} square on a white background, center", 7))
        for color in ("red", "blue", "green")
    }
    assert {color: r.color for color, r in readings.items()} == {"red": "red", "blue": "blue", "green": "green"}
    assert {r.background for r in readings.values()} == {"white"}
    assert {r.place for r in readings.values()} == {"center"}


def test_the_default_workflow_makes_what_its_prompt_says(runner):
    """workflows/txt2img_api.json exactly as shipped (the editor's first workflow too)."""
    document = json.loads((WORKFLOWS / "txt2img_api.json").read_text())
    reading = house_measure.read_image(runner.run(document, "9"))
    said = f"a {reading.size} {reading.color} {reading.shape} on a {reading.background} background, {reading.place}"
    assert said == document["6"]["inputs"]["text"]


def test_the_inpaint_workflow_paints_what_it_is_asked_inside_the_mask_only(runner):
    """workflows/inpaint_api.json as shipped, on a plain blue picture whose centre is transparent (the mask)."""
    picture = np.zeros((128, 128, 4), dtype=np.uint8)
    picture[..., :3] = house_data.COLORS["blue"]
    picture[..., 3] = 255
    picture[40:88, 40:88, 3] = 0
    runner.folders.input.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture, "RGBA").save(runner.folders.input / "inpaint_example.png")
    document = json.loads((WORKFLOWS / "inpaint_api.json").read_text())
    assert document["6"]["inputs"]["text"] == "a small yellow circle on a blue background, center"
    pixels = runner.run(document, "9")
    outside = np.ones((128, 128), dtype=bool)
    outside[40:88, 40:88] = False
    assert (pixels[outside] == picture[..., :3][outside]).all()
    reading = house_measure.read_image(pixels)
    assert (reading.color, reading.background, reading.place) == ("yellow", "blue", "center")
