"""Mask nodes through the engine: SolidMask, InvertMask, ThresholdMask, ImageToMask,
MaskToImage and GrowMask, read back from a PreviewImage of MaskToImage."""

import numpy as np
import pytest
import torch

from graph import Executor, Folders, build_registry, prepare
from nodes.sd.runtime import Runtime


@pytest.fixture(scope="module")
def registry():
    return build_registry("nodes", None)


def run_to_mask(tmp_path, registry, document, mask_node):
    """Runs ``document`` with a MaskToImage + PreviewImage after ``mask_node``; the mask [B, H, W]."""
    document = dict(document, show={"class_type": "MaskToImage", "inputs": {"mask": [mask_node, 0]}},
                    out={"class_type": "PreviewImage", "inputs": {"images": ["show", 0]}})
    folders = Folders.under(tmp_path)
    runtime = Runtime(folders=folders)
    checked = prepare(document, registry, runtime=runtime)
    assert checked.ok, checked.response()
    executor = Executor(folders=folders, runtime=runtime)
    result = executor.execute(checked.plan)
    assert result.status == "success", result.error
    (image,) = result.outputs["out"]["images"]
    from PIL import Image

    pixels = np.asarray(Image.open(folders.temp / image["subfolder"] / image["filename"]), dtype=np.float32) / 255
    assert np.array_equal(pixels[..., 0], pixels[..., 2])  # grey: the mask in every channel
    return torch.from_numpy(pixels[..., 0])


def test_solid_invert_and_threshold(tmp_path, registry):
    document = {"solid": {"class_type": "SolidMask", "inputs": {"value": 0.4, "width": 6, "height": 4}},
                "inv": {"class_type": "InvertMask", "inputs": {"mask": ["solid", 0]}},
                "thr": {"class_type": "ThresholdMask", "inputs": {"mask": ["inv", 0], "value": 0.5}}}
    assert run_to_mask(tmp_path / "a", registry, document, "solid").shape == (4, 6)
    assert torch.allclose(run_to_mask(tmp_path / "b", registry, document, "solid"), torch.full((4, 6), 0.4), atol=1 / 255)
    assert torch.allclose(run_to_mask(tmp_path / "c", registry, document, "inv"), torch.full((4, 6), 0.6), atol=1 / 255)
    assert torch.equal(run_to_mask(tmp_path / "d", registry, document, "thr"), torch.ones(4, 6))


def test_image_to_mask_takes_the_channel(tmp_path, registry):
    document = {"img": {"class_type": "EmptyImage", "inputs": {"width": 3, "height": 2, "batch_size": 1,
                                                                "color": 0xFF8000}},
                "red": {"class_type": "ImageToMask", "inputs": {"image": ["img", 0], "channel": "red"}},
                "green": {"class_type": "ImageToMask", "inputs": {"image": ["img", 0], "channel": "green"}},
                "alpha": {"class_type": "ImageToMask", "inputs": {"image": ["img", 0], "channel": "alpha"}}}
    assert torch.equal(run_to_mask(tmp_path / "r", registry, document, "red"), torch.ones(2, 3))
    assert torch.allclose(run_to_mask(tmp_path / "g", registry, document, "green"), torch.full((2, 3), 128 / 255))
    checked = prepare(dict(document, show={"class_type": "MaskToImage", "inputs": {"mask": ["alpha", 0]}},
                           out={"class_type": "PreviewImage", "inputs": {"images": ["show", 0]}}),
                      registry, runtime=Runtime(folders=Folders.under(tmp_path / "x")))
    result = Executor(folders=Folders.under(tmp_path / "x"), runtime={}).execute(checked.plan)
    assert result.status == "error" and "no alpha channel" in result.error["exception_message"]


@pytest.mark.parametrize(("expand", "tapered", "expected"), [
    (1, True, [[0, 1, 0], [1, 1, 1], [0, 1, 0]]),   # a cross: diagonals left out
    (1, False, [[1, 1, 1], [1, 1, 1], [1, 1, 1]]),  # a square
    (0, True, [[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
])
def test_grow_mask_from_one_pixel(expand, tapered, expected):
    from nodes.masks import GrowMask

    mask = torch.zeros(1, 5, 5)
    mask[0, 2, 2] = 1.0
    (grown,) = GrowMask().execute(mask, expand, tapered)
    assert grown.shape == (1, 5, 5)
    assert torch.equal(grown[0, 1:4, 1:4], torch.tensor(expected, dtype=torch.float32))
    assert grown.sum() == torch.tensor(expected).sum()  # nothing outside the 3x3


def test_grow_mask_negative_shrinks():
    from nodes.masks import GrowMask

    mask = torch.zeros(1, 7, 7)
    mask[0, 1:6, 1:6] = 1.0  # a 5x5 square
    (shrunk,) = GrowMask().execute(mask, -1, False)
    assert torch.equal(shrunk[0], torch.nn.functional.pad(torch.ones(3, 3), (2, 2, 2, 2)))
    (twice,) = GrowMask().execute(mask, -2, True)
    assert twice.sum() == 1 and twice[0, 3, 3] == 1
