"""Primitive, switch, preview, string and image utility nodes, run through the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from graph import prepare
from tests.utility_support import captured, make_registry, run


@pytest.fixture(scope="module")
def registry():
    return make_registry()


def capture(key, source, slot=0):
    return {"class_type": "TestCapture", "inputs": {"value": [source, slot], "key": key}}


def empty_image(width, height, color=0, batch=1):
    return {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch,
                                                   "color": color}}


def test_primitives_pass_their_values(registry, tmp_path):
    document = {"i": {"class_type": "PrimitiveInt", "inputs": {"value": -(2 ** 62)}},
                "f": {"class_type": "PrimitiveFloat", "inputs": {"value": 0.25}},
                "s": {"class_type": "PrimitiveString", "inputs": {"value": "one"}},
                "m": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "two\nlines"}},
                "b": {"class_type": "PrimitiveBoolean", "inputs": {"value": True}},
                **{f"c{k}": capture(f"prim.{k}", k) for k in "ifsmb"}}
    assert run(registry, document, tmp_path).status == "success"
    assert [captured(f"prim.{k}") for k in "ifsmb"] == [-(2 ** 62), 0.25, "one", "two\nlines", True]


def test_primitive_int_keeps_comfyuis_range(registry):
    document = {"i": {"class_type": "PrimitiveInt", "inputs": {"value": 2 ** 63}}, "c": capture("x", "i")}
    checked = prepare(document, registry)
    assert checked.node_errors["i"]["errors"][0]["type"] == "value_bigger_than_max"


def switch_document(switch, on_true=True, on_false=True):
    """A switch whose false branch fails when run (1/0), so running it shows up as an error."""
    inputs = {"switch": switch}
    document = {"t": {"class_type": "PrimitiveString", "inputs": {"value": "chosen"}},
                "one": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
                "boom": {"class_type": "ComfyMathExpression",
                         "inputs": {"expression": "a / 0", "values.a": ["one", 0]}}}
    if on_true:
        inputs["on_true"] = ["t", 0]
    if on_false:
        inputs["on_false"] = ["boom", 0]
    document["sw"] = {"class_type": "ComfySwitchNode", "inputs": inputs}
    document["c"] = capture("switch", "sw")
    return document


def test_switch_runs_only_the_chosen_branch(registry, tmp_path):
    result = run(registry, switch_document(True), tmp_path / "a")
    assert result.status == "success", result.error
    assert captured("switch") == "chosen" and "boom" not in result.executed and "one" not in result.executed
    failed = run(registry, switch_document(False), tmp_path / "b")
    assert failed.status == "error" and failed.error["node_id"] == "boom"


def test_switch_with_a_linked_switch_value(registry, tmp_path):
    document = switch_document(False)
    document["flag"] = {"class_type": "PrimitiveBoolean", "inputs": {"value": True}}
    document["sw"]["inputs"]["switch"] = ["flag", 0]
    result = run(registry, document, tmp_path)
    assert result.status == "success" and captured("switch") == "chosen"


def test_switch_passes_the_only_connected_branch(registry, tmp_path):
    # As ComfyUI's older optional-branch Switch did: the switch value does not matter then.
    result = run(registry, switch_document(False, on_false=False), tmp_path)
    assert result.status == "success" and captured("switch") == "chosen"
    result = run(registry, switch_document(True, on_true=False, on_false=False), tmp_path / "none")
    assert result.status == "error" and "must be connected" in result.error["exception_message"]


@pytest.mark.parametrize(("node", "expected"), [
    ({"class_type": "PrimitiveInt", "inputs": {"value": 42}}, "42"),
    ({"class_type": "PrimitiveBoolean", "inputs": {"value": False}}, "False"),
    ({"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a\nb"}}, "a\nb"),
])
def test_preview_any_shows_text(registry, tmp_path, node, expected):
    document = {"v": node, "p": {"class_type": "PreviewAny", "inputs": {"source": ["v", 0]}},
                "c": capture("preview", "p")}
    result = run(registry, document, tmp_path)
    assert result.outputs["p"] == {"text": [expected]} and captured("preview") == expected


def test_preview_any_of_an_image_prints_the_tensor(registry, tmp_path):
    document = {"v": empty_image(100, 10), "p": {"class_type": "PreviewAny", "inputs": {"source": ["v", 0]}}}
    text = run(registry, document, tmp_path).outputs["p"]["text"][0]
    # As ComfyUI prints it: 6 items at each end of a long axis (torch's default shows 3).
    assert text.startswith("tensor(") and "..." in text and text.count("[0., 0., 0.]") == 10 * 12
    assert str(torch.zeros(1, 10, 100, 3)).count("[0., 0., 0.]") == 6 * 6  # the defaults are back


def test_string_nodes(registry, tmp_path):
    document = {"cat": {"class_type": "StringConcatenate",
                        "inputs": {"string_a": "a cat", "string_b": "a hat", "delimiter": " in "}},
                "rep": {"class_type": "StringReplace", "inputs": {"string": ["cat", 0], "find": "a ", "replace": "the "}},
                "c": capture("string", "rep")}
    run(registry, document, tmp_path)
    assert captured("string") == "the cat in the hat"


def test_get_image_size_and_image_from_batch(registry, tmp_path):
    document = {"img": empty_image(7, 5, batch=4),
                "size": {"class_type": "GetImageSize", "inputs": {"image": ["img", 0]}},
                "last": {"class_type": "ImageFromBatch", "inputs": {"image": ["img", 0], "batch_index": -1, "length": 3}},
                "mid": {"class_type": "ImageFromBatch", "inputs": {"image": ["img", 0], "batch_index": 1, "length": 2}},
                **{f"c{i}": capture(f"size.{i}", "size", i) for i in range(3)},
                "cl": capture("last", "last"), "cm": capture("mid", "mid")}
    run(registry, document, tmp_path)
    assert [captured(f"size.{i}") for i in range(3)] == [7, 5, 4]
    assert captured("last").shape == (1, 5, 7, 3) and captured("mid").shape == (2, 5, 7, 3)


def test_batch_images_resizes_to_the_first(registry, tmp_path):
    document = {"a": empty_image(8, 4, 0xFF0000), "b": empty_image(16, 8, 0x00FF00, batch=2),
                "c": empty_image(8, 4, 0x0000FF),
                "batch": {"class_type": "BatchImagesNode",
                          "inputs": {"images.image0": ["a", 0], "images.image1": ["b", 0], "images.image3": ["c", 0]}},
                "out": capture("batch", "batch")}
    run(registry, document, tmp_path)
    batch = captured("batch")
    assert batch.shape == (4, 4, 8, 3)
    assert torch.equal(batch[:, 0, 0], torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]]))


def test_batch_images_gives_every_image_the_most_channels():
    from nodes.image_utility import batch_images

    rgba = torch.full((1, 4, 6, 4), 0.5)
    batch = batch_images([torch.zeros(2, 4, 6, 3), rgba])
    assert batch.shape == (3, 4, 6, 4)
    assert torch.equal(batch[:2, ..., 3], torch.ones(2, 4, 6)) and torch.equal(batch[2], rgba[0])


def test_batch_images_needs_two_images(registry):
    checked = prepare({"a": empty_image(8, 4), "batch": {"class_type": "BatchImagesNode",
                                                         "inputs": {"images.image0": ["a", 0]}},
                       "out": capture("x", "batch")}, registry)
    assert checked.node_errors["batch"]["errors"][0]["details"] == "images.image1"


@pytest.mark.parametrize(("direction", "match", "shape", "first_pixel"), [
    ("right", True, (1, 4, 8 + 2 + 8, 3), (1.0, 0.0, 0.0)),   # image2 scaled 16x8 -> 8x4
    ("down", True, (1, 4 + 2 + 4, 8, 3), (1.0, 0.0, 0.0)),
    ("left", True, (1, 4, 18, 3), (0.0, 1.0, 0.0)),
    ("up", False, (1, 8 + 2 + 4, 16, 3), (0.0, 1.0, 0.0)),     # image1 padded (centred) to 16 wide
])
def test_image_stitch(registry, tmp_path, direction, match, shape, first_pixel):
    document = {"a": empty_image(8, 4, 0xFF0000), "b": empty_image(16, 8, 0x00FF00),
                "s": {"class_type": "ImageStitch", "inputs": {"image1": ["a", 0], "image2": ["b", 0],
                                                              "direction": direction, "match_image_size": match,
                                                              "spacing_width": 1, "spacing_color": "blue"}},
                "c": capture("stitch", "s")}
    run(registry, document, tmp_path)
    stitched = captured("stitch")
    assert stitched.shape == shape
    assert tuple(stitched[0, 0, 0].tolist()) == pytest.approx(first_pixel, abs=1e-6)
    gap = stitched[0, :, 8] if direction == "right" else stitched[0, 4] if direction == "down" else None
    if gap is not None:  # the 1-pixel spacing is made even: two blue columns/rows
        assert torch.equal(gap, torch.tensor([0.0, 0.0, 1.0]).expand_as(gap))


def test_image_stitch_without_image2_returns_image1(registry, tmp_path):
    document = {"a": empty_image(8, 4, 0xFF0000),
                "s": {"class_type": "ImageStitch", "inputs": {"image1": ["a", 0], "direction": "right",
                                                              "match_image_size": True, "spacing_width": 0,
                                                              "spacing_color": "white"}},
                "c": capture("alone", "s")}
    run(registry, document, tmp_path)
    assert captured("alone").shape == (1, 4, 8, 3)


RESIZES = [
    ({"resize_type": "scale dimensions", "resize_type.width": 10, "resize_type.height": 10,
      "resize_type.crop": "center"}, (10, 10)),
    ({"resize_type": "scale dimensions", "resize_type.width": 0, "resize_type.height": 30,
      "resize_type.crop": "disabled"}, (30, 60)),
    ({"resize_type": "scale by multiplier", "resize_type.multiplier": 0.5}, (10, 20)),
    ({"resize_type": "scale longer dimension", "resize_type.longer_size": 10}, (5, 10)),
    ({"resize_type": "scale shorter dimension", "resize_type.shorter_size": 10}, (10, 20)),
    ({"resize_type": "scale width", "resize_type.width": 20}, (10, 20)),
    ({"resize_type": "scale height", "resize_type.height": 5}, (5, 10)),
    ({"resize_type": "scale to multiple", "resize_type.multiple": 16}, (16, 32)),
]


@pytest.mark.parametrize("method", ["area", "lanczos"])
@pytest.mark.parametrize(("inputs", "size"), RESIZES)
def test_resize_image_and_mask(registry, tmp_path, inputs, size, method):
    document = {"img": empty_image(40, 20, 0x336699),
                "mask": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 40, "height": 20}},
                "ri": {"class_type": "ResizeImageMaskNode",
                       "inputs": {"input": ["img", 0], "scale_method": method, **inputs}},
                "rm": {"class_type": "ResizeImageMaskNode",
                       "inputs": {"input": ["mask", 0], "scale_method": method, **inputs}},
                "ci": capture("resized.image", "ri"), "cm": capture("resized.mask", "rm")}
    assert run(registry, document, tmp_path).status == "success"
    height, width = size
    image, mask = captured("resized.image"), captured("resized.mask")
    assert image.shape == (1, height, width, 3) and mask.shape == (1, height, width)
    assert torch.allclose(image[0, 0, 0], torch.tensor([0x33, 0x66, 0x99]) / 255.0, atol=1 / 255)
    assert torch.allclose(mask, torch.full_like(mask, 0.5), atol=1 / 255)


def test_resize_to_total_pixels(registry, tmp_path):
    document = {"img": empty_image(400, 200),
                "r": {"class_type": "ResizeImageMaskNode",
                      "inputs": {"input": ["img", 0], "resize_type": "scale total pixels",
                                 "resize_type.megapixels": 0.01, "scale_method": "area"}},
                "c": capture("total", "r")}
    run(registry, document, tmp_path)
    # int(0.01 * 1024 * 1024) = 10485 pixels: scale sqrt(10485 / 80000) = 0.362
    assert captured("total").shape == (1, 72, 145, 3)


def test_resize_match_size_and_missing_revealed_input(registry, tmp_path):
    document = {"img": empty_image(40, 20), "ref": empty_image(9, 7),
                "r": {"class_type": "ResizeImageMaskNode",
                      "inputs": {"input": ["img", 0], "resize_type": "match size", "resize_type.match": ["ref", 0],
                                 "resize_type.crop": "center", "scale_method": "bilinear"}},
                "c": capture("match", "r")}
    run(registry, document, tmp_path / "a")
    assert captured("match").shape == (1, 7, 9, 3)
    # The chosen option's inputs are required (ComfyUI's validation says so before running).
    del document["r"]["inputs"]["resize_type.match"]
    errors = prepare(document, registry).node_errors["r"]["errors"]
    assert [(e["type"], e["details"]) for e in errors] == [("required_input_missing", "resize_type.match")]


def read_png(folder, entry):
    return np.asarray(Image.open(folder / entry["subfolder"] / entry["filename"]))


def test_mask_preview_and_image_compare(registry, tmp_path):
    document = {"mask": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 6, "height": 3}},
                "mp": {"class_type": "MaskPreview", "inputs": {"mask": ["mask", 0]}},
                "a": empty_image(5, 4, 0xFF0000), "b": empty_image(5, 4, 0x0000FF, batch=2),
                "cmp": {"class_type": "ImageCompare", "inputs": {"image_a": ["a", 0], "image_b": ["b", 0],
                                                                 "compare_view": {"before": "x", "after": "y"}}}}
    result = run(registry, document, tmp_path)
    assert result.status == "success", result.error
    temp = tmp_path / "temp"
    (preview,) = result.outputs["mp"]["images"]
    assert preview["type"] == "temp" and (read_png(temp, preview) == 255).all()
    ui = result.outputs["cmp"]
    assert len(ui["a_images"]) == 1 and len(ui["b_images"]) == 2
    assert tuple(read_png(temp, ui["a_images"][0])[0, 0]) == (255, 0, 0)
    assert tuple(read_png(temp, ui["b_images"][1])[0, 0]) == (0, 0, 255)


def test_memory_estimates_refuse_huge_resizes_and_batches(registry):
    from graph.limits import PromptLimits

    limits = PromptLimits(memory_bytes=64 * 1024 * 1024)
    resize = {"img": empty_image(64, 64),
              "r": {"class_type": "ResizeImageMaskNode",
                    "inputs": {"input": ["img", 0], "resize_type": "scale by multiplier",
                               "resize_type.multiplier": 8.0, "scale_method": "area"}},
              "c": capture("big", "r")}
    assert prepare(resize, registry, limits=limits).ok  # 512 x 512
    resize["r"]["inputs"].update({"resize_type": "scale dimensions", "resize_type.width": 16384,
                                  "resize_type.height": 16384, "resize_type.crop": "center"})
    checked = prepare(resize, registry, limits=limits)
    assert not checked.ok and "r" in checked.node_errors
    batch = {"img": empty_image(2048, 2048, batch=2),
             "b": {"class_type": "BatchImagesNode",
                   "inputs": {f"images.image{i}": ["img", 0] for i in range(10)}},
             "c": capture("batch", "b")}
    checked = prepare(batch, registry, limits=PromptLimits(memory_bytes=512 * 1024 * 1024))
    assert not checked.ok and "b" in checked.node_errors  # 20 x 2048 x 2048 x 3 floats = 960 MiB
