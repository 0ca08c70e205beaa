"""Two of ComfyUI's own template workflows that use only nodes we have run end to end,
unchanged, from their saved UI format (input images made here, with the names they ask for)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from graph import Executor, Folders, build_registry, prepare
from nodes.sd.runtime import Runtime
from tests.utility_support import templates_folder

pytestmark = pytest.mark.skipif(templates_folder() is None, reason="comfyui-workflow-templates-json is not installed")

COLORS = {"angle_1.png": (255, 0, 0), "angle_2.png": (0, 255, 0), "angle_3.png": (0, 0, 255),
          "angle_4.png": (255, 255, 0), "pray.png": (10, 120, 240)}


@pytest.fixture(scope="module")
def registry():
    return build_registry("nodes", None)


def run_template(registry, tmp_path, name):
    folders = Folders.under(tmp_path)
    for folder in (folders.input, folders.output, folders.temp):
        folder.mkdir()
    for file_name, color in COLORS.items():
        Image.new("RGB", (24, 16), color).save(folders.input / file_name)
    document = json.loads((templates_folder() / name).read_text(encoding="utf-8"))
    runtime = Runtime(folders=folders)
    checked = prepare(document, registry, runtime=runtime)
    assert checked.ok, checked.response()
    result = Executor(folders=folders, runtime=runtime).execute(checked.plan)
    assert result.status == "success", result.error
    return folders, result


def test_image_stitch_grid_template(registry, tmp_path):
    folders, result = run_template(registry, tmp_path, "utility_image_stitch.json")
    (saved,) = result.outputs["19"]["images"]
    grid = np.asarray(Image.open(folders.output / saved["subfolder"] / saved["filename"]))
    # Four 24x16 images, 2x2 (48x32), scaled and centre-cropped to 2048x2048 by ResizeImageMaskNode.
    assert grid.shape == (2048, 2048, 3)
    quarter = {(0, 0): "angle_1.png", (0, 1): "angle_2.png", (1, 0): "angle_3.png", (1, 1): "angle_4.png"}
    for (row, column), file_name in quarter.items():
        centre = grid[512 + 1024 * row, 512 + 1024 * column]
        assert tuple(centre) == COLORS[file_name], (row, column)


def test_image_compare_template(registry, tmp_path):
    folders, result = run_template(registry, tmp_path, "utility_interpolation_image_upscale.json")
    compare = result.outputs["7"]
    (before,), (after,) = compare["a_images"], compare["b_images"]
    assert Image.open(folders.temp / before["filename"]).size == (24, 16)
    assert Image.open(folders.temp / after["filename"]).size == (48, 32)
    assert result.outputs["5"]["images"][0]["type"] == "output"
