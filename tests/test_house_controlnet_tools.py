"""The house ControlNet's tools (``tools/house_hints.py``, ``tools/train_house_controlnet.py``):
hints equal the engine's Canny node, a few training steps move the zero convolutions, and
the exported file is a standard LDM ControlNet that ``nodes.controlnet`` loads tensor for
tensor. The trained model itself is checked in ``tests/test_house_controlnet.py``."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from safetensors import safe_open

from nodes.controlnet.load import load_controlnet
from nodes.controlnet_nodes import Canny
from tools import house_data, house_hints
from tools import train_house_controlnet as trainer


@pytest.fixture(scope="module")
def house():
    return trainer.load_house()


def test_hints_are_what_the_canny_node_makes_with_its_defaults():
    assert (Canny.low_threshold.default, Canny.high_threshold.default) == (house_hints.CANNY_LOW, house_hints.CANNY_HIGH)
    layout = house_hints.scene_layout(house_data.Scene("star", "red", "white", "left", "large"), random.Random(1))
    image = house_hints.to_unit([house_hints.drawing(layout)])
    (node_edges,) = Canny().execute(image.movedim(1, -1), house_hints.CANNY_LOW, house_hints.CANNY_HIGH)
    edges = house_hints.canny_edges(image)
    assert torch.equal(node_edges, edges.repeat(1, 3, 1, 1).movedim(1, -1))
    # the edges lie on the shape's outline: every edge pixel within 2 px of the silhouette's border
    mask = house_hints.silhouette(layout)
    border = mask ^ np.pad(mask, 1)[2:, 1:-1] & np.pad(mask, 1)[:-2, 1:-1] & np.pad(mask, 1)[1:-1, 2:] \
        & np.pad(mask, 1)[1:-1, :-2]
    near = border.copy()
    for _ in range(2):
        near = near | np.pad(near, 1)[2:, 1:-1] | np.pad(near, 1)[:-2, 1:-1] | np.pad(near, 1)[1:-1, 2:] \
            | np.pad(near, 1)[1:-1, :-2]
    on = edges[0, 0].numpy() > 0.5
    assert on.sum() > 50 and (on & ~near).sum() == 0


def test_colours_canny_cannot_tell_apart_get_the_sketchs_edges():
    # red (220, 30, 30) and purple (135, 45, 185) are nearly equally bright: no edge in the drawing
    layout = house_hints.scene_layout(house_data.Scene("circle", "red", "purple", "center", "large"), random.Random(2))
    assert house_hints.canny_edges(house_hints.to_unit([house_hints.drawing(layout)])).sum() == 0
    hint = trainer.make_hints([layout], random.Random(0))
    assert hint.dtype == torch.uint8 and hint.shape == (1, 1, 128, 128)
    sketch_edges = house_hints.canny_edges(house_hints.to_unit([house_hints.sketch(layout)]))
    assert torch.equal(hint.float() / 255, sketch_edges)


def test_a_fifth_of_the_hints_are_silhouettes_the_rest_edges():
    rng = random.Random(4)
    layouts = [house_hints.free_layout("star", "blue", "white", rng) for _ in range(60)]
    hints = trainer.make_hints(layouts, random.Random(1)).float() / 255
    filled = [torch.equal(h[0], torch.from_numpy(house_hints.silhouette(x)).float())
              for h, x in zip(hints, layouts, strict=True)]
    sketched = house_hints.canny_edges(house_hints.to_unit([house_hints.sketch(x) for x in layouts]))
    drawn = house_hints.canny_edges(house_hints.to_unit([house_hints.drawing(x) for x in layouts]))
    edges = [torch.equal(h, s) or torch.equal(h, d) for h, s, d in zip(hints, sketched, drawn, strict=True)]
    assert all(f != e for f, e in zip(filled, edges, strict=True))  # every hint is exactly one of the kinds
    assert 4 <= sum(filled) <= 20  # SILHOUETTE_SHARE = 0.2 of 60


def test_free_layouts_name_the_place_and_size_the_reader_would():
    rng = random.Random(3)
    for _ in range(20):
        layout = house_hints.free_layout("square", "blue", "white", rng)
        mask = house_hints.silhouette(layout)
        assert mask[:3].sum() == mask[-3:].sum() == mask[:, :3].sum() == mask[:, -3:].sum() == 0
        moved = layout.moved(10, -5)
        assert (moved.cx, moved.cy) == (layout.cx + 10, layout.cy - 5)


def test_a_few_training_steps_and_export_give_a_loadable_ldm_controlnet(house, tmp_path):
    unet, vae, text, scale = house
    data = trainer.build_data(tmp_path, 8, 0, vae)
    assert data["latent"].shape == (8, 4, 16, 16) and data["hint"].shape == (8, 1, 128, 128)
    net = trainer.train(tmp_path, data, unet, text, scale, steps=2, batch=2, lr_peak=1e-3, seed=0, save_every=2)
    zero_conv = net.controlnet_down_blocks[0].weight
    assert zero_conv.abs().max() > 0  # from_unet starts it at zero; training moved it
    path = tmp_path / "controlnet.safetensors"
    assert path.stat().st_size <= 15 * 2**20
    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
        assert all(k.startswith("control_model.") for k in keys)
        assert "control_model.zero_convs.0.0.weight" in keys and "control_model.input_hint_block.0.weight" in keys
        assert handle.get_tensor(keys[0]).dtype == torch.float16
    loaded = load_controlnet(path, keep_file_precision=False)
    assert loaded.family == "sd1" and loaded.model.config.norm_num_groups == 4
    ours, theirs = net.state_dict(), loaded.model.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert torch.equal(value.half().float(), theirs[key].float()), key
    # resuming from the saved state continues the step count
    again = trainer.train(tmp_path, data, unet, text, scale, steps=2, batch=2, lr_peak=1e-3, seed=0, save_every=2)
    assert torch.equal(again.controlnet_down_blocks[0].weight, zero_conv)


def test_a_resumed_run_trains_exactly_as_an_uninterrupted_one(house, tmp_path):
    unet, vae, text, scale = house
    data = trainer.build_data(tmp_path, 6, 0, vae)
    straight = trainer.train(tmp_path / "a", data, unet, text, scale, steps=3, batch=2, lr_peak=1e-3, seed=0,
                             save_every=10)
    trainer.train(tmp_path / "b", data, unet, text, scale, steps=3, batch=2, lr_peak=1e-3, seed=0, save_every=10,
                  stop_at=1)
    resumed = trainer.train(tmp_path / "b", data, unet, text, scale, steps=3, batch=2, lr_peak=1e-3, seed=0,
                            save_every=10)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
