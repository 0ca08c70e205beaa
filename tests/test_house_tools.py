"""The house model's data set, its pixel measurements, and its checkpoint layout."""

import random

import pytest
import torch

from tools import house_data, house_measure


def test_scenes_split_keeps_held_out_captions_out_of_training():
    train, held = house_data.split_scenes()
    assert len(held) == house_data.HELD_OUT
    assert len(train) + len(held) == len(house_data.all_scenes())
    assert not {s.caption() for s in train} & {s.caption() for s in held}
    # Every attribute value still appears in training, so held-out captions are new combinations.
    for name in ("shape", "color", "background", "place", "size"):
        assert {getattr(s, name) for s in held} <= {getattr(s, name) for s in train}


def test_caption_wording():
    scene = house_data.Scene("circle", "red", "blue", "top left", "small")
    assert scene.caption() == "a small red circle on a blue background, top left"
    partial = scene.partial_caption(random.Random(3))
    assert partial.startswith("a ") and "red" in partial and "circle" in partial


def test_measurements_read_drawn_scenes_back():
    rng = random.Random(11)
    scenes = house_data.all_scenes()
    for _ in range(150):
        scene = rng.choice(scenes)
        reading = house_measure.read_image(house_data.to_array(house_data.render(scene, rng)))
        assert (reading.color, reading.background, reading.shape, reading.place, reading.size) == (
            scene.color, scene.background, scene.shape, scene.place, scene.size), scene


def test_measurement_of_a_plain_image_finds_no_shape():
    plain = house_data.to_array(house_data.draw_shape("circle", 64, 64, 0.0, (0, 0, 0), house_data.COLORS["green"]))
    reading = house_measure.read_image(plain)
    assert reading.background == "green" and reading.shape is None


def test_house_architecture_round_trips_through_the_checkpoint_loader(tmp_path):
    from diffusers import AutoencoderKL

    from nodes.models.ldm_writer import save_ldm_checkpoint
    from nodes.models.loader import load_checkpoint
    from tools import train_house_model as train

    unet, text = train.build_diffusion_models(seed=0)
    vae = AutoencoderKL(**train.VAE_CONFIG, scaling_factor=0.5)
    path = save_ldm_checkpoint(tmp_path / "house.safetensors", "sd1", unet, vae, [text],
                               store_arch_config=True, prediction_type="epsilon")
    loaded = load_checkpoint(path)
    assert loaded.family == "sd1" and loaded.prediction_type == "epsilon"
    assert loaded.vae_scale_factor == pytest.approx(0.5)
    for mine, theirs in ((unet, loaded.unet), (vae, loaded.vae), (text, loaded.text_encoders[0])):
        ours = mine.state_dict()
        for key, value in theirs.state_dict().items():
            if key in ours:
                assert torch.equal(ours[key], value), key


def test_accuracy_counts_each_field_and_the_sample_spans_every_kind():
    scenes = house_data.held_out_sample(10)
    assert len(scenes) == 10 and {s.shape for s in scenes} == set(house_data.SHAPES)
    rng = random.Random(4)
    readings = [house_measure.read_image(house_data.to_array(house_data.render(s, rng))) for s in scenes]
    assert house_measure.accuracy(readings, scenes) == dict.fromkeys(house_measure.FIELDS, 1.0)
    wrong_place = [house_measure.Reading(r.background, r.color, r.shape, None, r.size) for r in readings[:5]]
    accuracy = house_measure.accuracy(wrong_place + readings[5:], scenes)
    assert accuracy["place"] == 0.5 and accuracy["color"] == 1.0
