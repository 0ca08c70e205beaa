"""SaveImageAdvanced: PNG at 8 and 16 bits and OpenEXR floats, with the workflow inside,
read back with Pillow (PNG) and with a reader written from the OpenEXR file layout."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from graph import prepare
from graph.ui_format import ui_to_workflow
from nodes.save_advanced import encode_png
from tests.utility_support import make_registry, run


@pytest.fixture(scope="module")
def registry():
    return make_registry()


def save_document(fmt, **revealed):
    return {"img": {"class_type": "EmptyImage", "inputs": {"width": 5, "height": 3, "batch_size": 2,
                                                          "color": 0x80FF00}},
            "save": {"class_type": "SaveImageAdvanced",
                     "inputs": {"images": ["img", 0], "filename_prefix": "adv/shot", "format": fmt,
                                **{f"format.{k}": v for k, v in revealed.items()}}}}


def test_png_8_bit_with_the_prompt(registry, tmp_path):
    result = run(registry, save_document("png", bit_depth="8-bit", input_color_space="sRGB"), tmp_path)
    assert result.outputs["save"]["images"] == [
        {"filename": "shot_00001.png", "subfolder": "adv", "type": "output"},
        {"filename": "shot_00002.png", "subfolder": "adv", "type": "output"}]
    image = Image.open(tmp_path / "output" / "adv" / "shot_00002.png")
    assert image.mode == "RGB" and image.size == (5, 3) and image.getpixel((4, 2)) == (128, 255, 0)
    assert json.loads(image.text["prompt"])["save"]["class_type"] == "SaveImageAdvanced"
    again = run(registry, save_document("png", bit_depth="8-bit", input_color_space="sRGB"), tmp_path)  # the counter goes on
    assert again.outputs["save"]["images"][0]["filename"] == "shot_00003.png"


def png_samples(data: bytes) -> np.ndarray:
    """The samples of a filter-0 PNG written by encode_png, decoded by hand."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", None
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind, body = data[position + 4:position + 8], data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    width, height, bits, color_type = header[:4]
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, -1)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].copy().view(">u2" if bits == 16 else np.uint8).reshape(height, width, channels)


def test_png_16_bit_keeps_the_precision(registry, tmp_path):
    frame = torch.linspace(0, 1, 4 * 6 * 3).reshape(4, 6, 3)
    samples = png_samples(encode_png(frame, 16, {}))
    assert samples.dtype == np.dtype(">u2")
    assert np.array_equal(samples, np.round(frame.numpy() * 65535).astype(np.uint16))
    result = run(registry, save_document("png", bit_depth="16-bit", input_color_space="sRGB"), tmp_path)
    path = tmp_path / "output" / "adv" / result.outputs["save"]["images"][0]["filename"]
    with Image.open(path) as image:  # Pillow reads it (and checks every chunk's CRC)
        image.load()
        assert image.size == (5, 3)
    assert png_samples(path.read_bytes())[0, 0].tolist() == [round(128 / 255 * 65535), 65535, 0]


def read_exr(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """Attributes and channel planes of an uncompressed single-part scan-line EXR."""
    magic, version = struct.unpack("<ii", data[:8])
    assert magic == 20000630 and version & 0xFF == 2
    position, attributes = 8, {}
    while data[position] != 0:
        name_end = data.index(b"\0", position)
        kind_end = data.index(b"\0", name_end + 1)
        (size,) = struct.unpack("<i", data[kind_end + 1:kind_end + 5])
        name = data[position:name_end].decode()
        attributes[name] = (data[name_end + 1:kind_end].decode(), data[kind_end + 5:kind_end + 5 + size])
        position = kind_end + 5 + size
    position += 1
    channels, cursor = [], attributes["channels"][1]
    while cursor[0] != 0:
        end = cursor.index(b"\0")
        assert struct.unpack("<i", cursor[end + 1:end + 5])[0] == 2  # FLOAT
        channels.append(cursor[:end].decode())
        cursor = cursor[end + 17:]
    assert attributes["compression"][1] == b"\0"
    xmin, ymin, xmax, ymax = struct.unpack("<iiii", attributes["dataWindow"][1])
    width, height = xmax - xmin + 1, ymax - ymin + 1
    offsets = struct.unpack(f"<{height}Q", data[position:position + 8 * height])
    planes = {name: np.zeros((height, width), np.float32) for name in channels}
    for offset in offsets:
        y, size = struct.unpack("<ii", data[offset:offset + 8])
        row = np.frombuffer(data[offset + 8:offset + 8 + size], "<f4").reshape(len(channels), width)
        for index, name in enumerate(channels):
            planes[name][y] = row[index]
    return attributes, planes


@pytest.mark.parametrize(("space", "expected"), [
    ("linear", 128 / 255),
    ("sRGB", ((128 / 255 + 0.055) / 1.055) ** 2.4),
    # BT.2100 HLG inverse OETF above 0.5: (exp((E - c) / a) + b) / 12
    ("HDR", (np.exp((128 / 255 - 0.55991073) / 0.17883277) + 0.28466892) / 12),
])
def test_exr_is_scene_linear_float(registry, tmp_path, space, expected):
    result = run(registry, save_document("exr", bit_depth="32-bit float", input_color_space=space), tmp_path)
    entry = result.outputs["save"]["images"][1]
    assert entry["filename"] == "shot_00002.exr"
    attributes, planes = read_exr((tmp_path / "output" / "adv" / entry["filename"]).read_bytes())
    assert sorted(planes) == ["B", "G", "R"] and planes["R"].shape == (3, 5)
    assert planes["R"][2, 4] == pytest.approx(expected, rel=1e-5)
    assert planes["G"][0, 0] == pytest.approx(1.0) and planes["B"].max() == 0.0
    assert json.loads(attributes["prompt"][1])["save"]["inputs"]["format"] == "exr"


def errors_of(registry, document) -> dict[str, tuple[str, list]]:
    """input name -> (error type, the input's choices in the error's input_config)."""
    checked = prepare(document, registry, ["save"])
    return {error["extra_info"]["input_name"]: (error["type"], (error["extra_info"].get("input_config") or [None])[0])
            for error in checked.node_errors.get("save", {}).get("errors", [])}


def test_the_chosen_format_declares_its_inputs_as_comfyui_does(registry):
    # Each format has its own bit depths (ComfyUI's per-option declarations): 16-bit is a
    # choice for PNG, not for EXR; a format's inputs are required while it is chosen.
    assert errors_of(registry, save_document("exr", bit_depth="16-bit", input_color_space="linear")) == {
        "format.bit_depth": ("value_not_in_list", ["32-bit float"])}
    assert errors_of(registry, save_document("png", bit_depth="16-bit", input_color_space="sRGB")) == {}
    assert errors_of(registry, save_document("png", input_color_space="HDR")) == {
        "format.bit_depth": ("required_input_missing", None), "format.input_color_space": ("value_not_in_list", ["sRGB"])}
    # The inputs of a format not chosen are not looked at (ComfyUI ignores them too).
    assert errors_of(registry, save_document("png", bit_depth="8-bit", input_color_space="sRGB", crf="x")) == {}
    animated = dict(bit_depth="auto", input_color_space="HDR PQ", crf=18, save_mode="animated")
    assert set(errors_of(registry, save_document("avif", **animated))) == {
        "format.save_mode.fps", "format.save_mode.loop_count"}


def test_avif_is_a_node_error(registry, tmp_path):
    result = run(registry, save_document("avif", bit_depth="auto", input_color_space="sRGB", crf=18,
                                         save_mode="still images"), tmp_path)
    assert result.status == "error" and "AVIF" in result.error["exception_message"]


def test_ui_widgets_of_a_nested_dynamic_combo(registry):
    # ComfyUI saves only the revealed widgets: format avif reveals bit_depth,
    # input_color_space, crf and save_mode, whose "animated" reveals fps and loop_count.
    node = {"id": 1, "type": "SaveImageAdvanced", "mode": 0,
            "inputs": [{"name": "images", "type": "IMAGE", "link": None}],
            "widgets_values": ["clip", "avif", "auto", "HDR", 20, "animated", 12.0, 3]}
    spec = ui_to_workflow({"nodes": [node], "links": []}, registry).nodes["1"]
    assert spec.inputs == {"filename_prefix": "clip", "format": "avif", "format.bit_depth": "auto",
                           "format.input_color_space": "HDR", "format.crf": 20, "format.save_mode": "animated",
                           "format.save_mode.fps": 12.0, "format.save_mode.loop_count": 3}
    node["widgets_values"] = ["still", "png", "16-bit", "sRGB"]
    spec = ui_to_workflow({"nodes": [node], "links": []}, registry).nodes["1"]
    assert spec.inputs == {"filename_prefix": "still", "format": "png", "format.bit_depth": "16-bit",
                           "format.input_color_space": "sRGB"}


def test_every_widget_in_declaration_order_is_read_as_such(registry):
    # An editor that shows every widget (this project's) saves them all, in declaration order.
    definition = registry.get("ResizeImageMaskNode")
    values = [definition.inputs[name].default for name in definition.widget_names]
    values[definition.widget_names.index("resize_type.multiplier")] = 2.5
    values[definition.widget_names.index("resize_type")] = "scale by multiplier"
    node = {"id": 1, "type": "ResizeImageMaskNode", "mode": 0, "inputs": [], "widgets_values": values}
    spec = ui_to_workflow({"nodes": [node], "links": []}, registry).nodes["1"]
    assert spec.inputs["resize_type"] == "scale by multiplier" and spec.inputs["resize_type.multiplier"] == 2.5
    assert spec.inputs["scale_method"] == "area" and len(spec.inputs) == len(definition.widget_names)
    checked = prepare({"1": dict(class_type="ResizeImageMaskNode", inputs=spec.inputs)}, registry, ["1"])
    assert [e["details"] for e in checked.node_errors["1"]["errors"]] == ["input"]  # only the unlinked image


WIDGET_VALUES = st.lists(st.one_of(
    st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=True),
    st.sampled_from(["png", "exr", "avif", "animated", "still images", "scale dimensions", "match size",
                     "scale by multiplier", "8-bit", "HDR"]),
    st.text(max_size=5), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)), max_size=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(node_type=st.sampled_from(["SaveImageAdvanced", "ResizeImageMaskNode", "ComfyMathExpression"]),
       values=WIDGET_VALUES)
def test_any_widget_list_of_a_dynamic_node_converts_without_raising(registry, node_type, values):
    node = {"id": 1, "type": node_type, "mode": 0, "inputs": [], "widgets_values": values}
    spec = ui_to_workflow({"nodes": [node], "links": []}, registry).nodes["1"]
    assert set(spec.inputs) <= set(registry.get(node_type).inputs)
    prepare({"nodes": [node], "links": []}, registry, ["1"])  # reports, never raises
