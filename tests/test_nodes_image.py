"""Built-in image, io and latent nodes, run through the engine like any workflow."""

import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from graph import Executor, Folders, build_registry, prepare
from nodes.sd.runtime import Runtime


@pytest.fixture(scope="module")
def builtin_registry():
    return build_registry("nodes", None)


@pytest.fixture
def folders(tmp_path):
    folders = Folders.under(tmp_path)
    for folder in (folders.input, folders.output, folders.temp):
        folder.mkdir()
    return folders


def run(registry, folders, document, executor=None, extra_data=None):
    runtime = Runtime(folders=folders)
    checked = prepare(document, registry, runtime=runtime)
    assert checked.ok, checked.response()
    executor = executor or Executor(folders=folders, runtime=runtime)
    return executor.execute(checked.plan, extra_data=extra_data)


def test_save_image_names_counts_and_embeds_the_workflow(builtin_registry, folders):
    document = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 2, "color": 0xFF0000}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "run/shot"}}}
    result = run(builtin_registry, folders, document, extra_data={"extra_pnginfo": {"workflow": {"nodes": []}}})
    assert result.outputs["2"]["images"] == [
        {"filename": "shot_00001_.png", "subfolder": "run", "type": "output"},
        {"filename": "shot_00002_.png", "subfolder": "run", "type": "output"}]
    image = Image.open(folders.output / "run" / "shot_00002_.png")
    assert image.size == (8, 4) and image.getpixel((0, 0)) == (255, 0, 0)
    assert json.loads(image.text["prompt"])["1"]["class_type"] == "EmptyImage"
    assert json.loads(image.text["workflow"]) == {"nodes": []}
    document["1"]["inputs"]["color"] = 0x00FF00
    again = run(builtin_registry, folders, document)
    assert again.outputs["2"]["images"][0]["filename"] == "shot_00003_.png"


def test_save_prefix_cannot_escape_the_output_folder(builtin_registry, folders):
    document = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "../escape"}}}
    result = run(builtin_registry, folders, document)
    assert result.status == "error" and "leaves its folder" in result.error["exception_message"]
    assert not (folders.output.parent / "escape_00001_.png").exists()


def test_preview_image_goes_to_temp(builtin_registry, folders):
    document = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    (entry,) = run(builtin_registry, folders, document).outputs["2"]["images"]
    assert entry["type"] == "temp" and (folders.temp / entry["filename"]).is_file()


def test_load_image_gives_pixels_and_inverted_alpha_mask(builtin_registry, folders):
    rgba = np.zeros((6, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:, :5, 3] = 0  # left half transparent
    Image.fromarray(rgba, "RGBA").save(folders.input / "cut.png")
    Image.new("RGB", (4, 4), (0, 0, 255)).save(folders.input / "plain.jpg")
    info = builtin_registry.object_info(Runtime(folders=folders))["LoadImage"]
    assert info["input"]["required"]["image"] == [["cut.png", "plain.jpg"], {"image_upload": True}]

    from graph.node import definition_of
    from nodes.io import LoadImage

    image, mask = run_node(LoadImage, folders, image="cut.png")
    assert image.shape == (1, 6, 10, 3) and abs(float(image[0, 0, 0, 0]) - 200 / 255) < 1e-6
    assert mask.shape == (1, 6, 10)
    assert torch.all(mask[:, :, :5] == 1.0) and torch.all(mask[:, :, 5:] == 0.0)
    _, plain_mask = run_node(LoadImage, folders, image="plain.jpg")
    assert plain_mask.shape == (1, 64, 64) and float(plain_mask.sum()) == 0.0
    assert definition_of(LoadImage).inputs["image"].check_constant("../secret.png", Runtime(folders=folders))


def run_node(cls, folders, **inputs):
    from graph.context import ExecutionContext

    node = cls(ExecutionContext(prompt_id="t", emit=lambda *a: None, interrupt=threading.Event(),
                                folders=folders))
    return node.execute(**inputs)


def test_changed_input_file_reruns_load_image(builtin_registry, folders):
    Image.new("RGB", (4, 4), (255, 0, 0)).save(folders.input / "a.png")
    document = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
                "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    runtime = Runtime(folders=folders)
    executor = Executor(folders=folders, runtime=runtime)
    assert run(builtin_registry, folders, document, executor).executed == ["1", "2"]
    assert run(builtin_registry, folders, document, executor).executed == []
    Image.new("RGB", (4, 4), (0, 255, 0)).save(folders.input / "a.png")
    assert run(builtin_registry, folders, document, executor).executed == ["1", "2"]


def test_image_scale_and_invert(builtin_registry, folders):
    from nodes.image import ImageInvert, ImageScale, ImageScaleBy

    image = torch.rand(2, 10, 20, 3)
    assert torch.allclose(run_node(ImageInvert, folders, image=image)[0], 1 - image)
    (scaled,) = run_node(ImageScale, folders, image=image, upscale_method="bilinear", width=40, height=0, crop="disabled")
    assert scaled.shape == (2, 20, 40, 3)
    (cropped,) = run_node(ImageScale, folders, image=image, upscale_method="area", width=8, height=8, crop="center")
    assert cropped.shape == (2, 8, 8, 3)
    (halved,) = run_node(ImageScaleBy, folders, image=image, upscale_method="lanczos", scale_by=0.5)
    assert halved.shape == (2, 5, 10, 3) and 0.0 <= float(halved.min()) and float(halved.max()) <= 1.0


def test_latent_nodes(folders):
    from nodes.latent import EmptyLatentImage, LatentUpscale, LatentUpscaleBy

    (latent,) = run_node(EmptyLatentImage, folders, width=512, height=256, batch_size=3)
    assert latent["samples"].shape == (3, 4, 32, 64) and float(latent["samples"].abs().sum()) == 0.0
    noisy = {"samples": torch.randn(1, 4, 8, 8), "batch_index": [0]}
    (up,) = run_node(LatentUpscale, folders, samples=noisy, upscale_method="bislerp", width=128, height=96, crop="disabled")
    assert up["samples"].shape == (1, 4, 12, 16) and up["batch_index"] == [0]
    (by,) = run_node(LatentUpscaleBy, folders, samples=noisy, upscale_method="nearest-exact", scale_by=2.0)
    assert by["samples"].shape == (1, 4, 16, 16)
    assert torch.equal(by["samples"][:, :, ::2, ::2], noisy["samples"])
    # bislerp keeps the magnitude of latent vectors better than a plain bilinear blend
    (slerped,) = run_node(LatentUpscaleBy, folders, samples=noisy, upscale_method="bislerp", scale_by=1.5)
    (lerped,) = run_node(LatentUpscaleBy, folders, samples=noisy, upscale_method="bilinear", scale_by=1.5)
    norm = noisy["samples"].norm(dim=1).mean()
    assert abs(slerped["samples"].norm(dim=1).mean() - norm) < abs(lerped["samples"].norm(dim=1).mean() - norm)
