"""UpscaleModelLoader / ImageUpscaleWithModel with generated spandrel-architecture weights, and the tiler."""

import threading

import pytest
import torch
import torch.nn.functional as F

from graph import prepare
from nodes.models.errors import ModelLoadError, UnsafeFormatError
from nodes.upscale_model.load import load_upscale_model
from nodes.upscale_model.tiled import tile_count, tile_starts, tiled_apply, tiled_apply_fitting
from tests.fixtures.model_env import model_env
from tests.fixtures.tiny_upscalers import write_tiny_compact, write_tiny_esrgan
from tests.test_sd_nodes import Capture


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("upscalers")
    return {"esrgan": write_tiny_esrgan(root / "esrgan_x2.safetensors", scale=2),
            "compact": write_tiny_compact(root / "compact_x4.safetensors", scale=4),
            "pth": write_tiny_esrgan(root / "esrgan_x2.pth", scale=2, seed=1)}


@pytest.fixture(scope="module")
def env(files, tmp_path_factory):
    root = tmp_path_factory.mktemp("upscale_env")
    return model_env(root, {"upscale_models": {p.name: p for p in files.values()}})


def upscale_doc(model_name, width=40, height=24, batch=1):
    return {
        "1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": model_name}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch,
                                                     "color": 0x3366CC}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["1", 0], "image": ["2", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


@pytest.mark.parametrize("name, arch, scale", [("esrgan_x2.safetensors", "ESRGAN", 2),
                                               ("compact_x4.safetensors", "RealESRGAN Compact", 4),
                                               ("esrgan_x2.pth", "ESRGAN", 2)])
def test_generated_models_are_detected_and_upscale_images(env, name, arch, scale):
    capture = Capture(env)
    result = capture.run(upscale_doc(name, batch=2))
    assert result.status == "success", result.error
    model, image, out = capture.output("1"), capture.output("2"), capture.output("3")
    assert (model.architecture, model.scale, model.input_channels) == (arch, scale, 3)
    assert out.shape == (2, 24 * scale, 40 * scale, 3) and float(out.min()) >= 0 and float(out.max()) <= 1
    expected = model(image[:1].movedim(-1, 1)).movedim(1, -1)  # one tile: the model on the whole image
    assert torch.allclose(out[:1], expected, atol=1e-6)
    assert [d["value"] for e, d in capture.events if e == "progress"] == [1, 2]  # one tile per image


def test_tiling_is_exact_for_a_local_model_and_covers_odd_sizes():
    image = torch.rand(2, 3, 70, 45)

    def local(tile):  # each output pixel depends on one input pixel
        return F.interpolate(tile, scale_factor=3, mode="nearest") * 0.8 + 0.1

    calls = []
    out = tiled_apply(image, local, scale=3, out_channels=3, tile=32, overlap=8,
                      progress=lambda done, total: calls.append((done, total)))
    assert torch.allclose(out, local(image), atol=1e-6)
    assert tile_starts(70, 32, 8) == [0, 24, 38] and tile_starts(20, 32, 8) == [0]
    assert calls[-1] == (12, 12) == (2 * tile_count(70, 45, 32, 8), 12)


def test_tiled_output_has_no_visible_seams(files):
    model = load_upscale_model(files["compact"])  # 3x3 convolutions: depends on neighbours
    image = torch.rand(1, 3, 48, 64)
    whole = model(image)
    errors = {overlap: (tiled_apply(image, model, scale=4, out_channels=3, tile=24, overlap=overlap) - whole).abs()
              for overlap in (0, 8)}
    assert errors[8].max() < 0.01 and errors[8].mean() < 1e-4
    assert errors[0].max() > 3 * errors[8].max()  # without overlap the tile borders show


def test_out_of_memory_retries_with_smaller_tiles_and_gives_up_clearly():
    image = torch.rand(1, 3, 300, 200)
    sizes, progress = [], []

    def picky(tile):
        sizes.append(tile.shape[-1])
        if max(tile.shape[-2:]) > 150:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return tile

    out = tiled_apply_fitting(image, picky, scale=1, out_channels=3, tile=512, overlap=32,
                              progress=lambda done, total: progress.append(total))
    assert torch.allclose(out, image, atol=1e-6)
    assert sizes[0] == 200 and sizes[1] == 200 and set(sizes[2:]) == {128}  # 512, then 256, then 128
    assert progress[0] == tile_count(300, 200, 128, 32)

    def never(tile):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(MemoryError, match="even with 128x128 tiles"):
        tiled_apply_fitting(image, never, scale=1, out_channels=3)


def test_progress_per_tile_and_interrupt_between_tiles(env, monkeypatch):
    import nodes.upscale as upscale_nodes

    monkeypatch.setattr(upscale_nodes, "TILE", 16)
    monkeypatch.setattr(upscale_nodes, "OVERLAP", 4)
    registry, runtime = env
    capture = Capture(env)
    result = capture.run(upscale_doc("esrgan_x2.safetensors", width=40, height=24))
    assert result.status == "success"
    assert [(d["value"], d["max"]) for e, d in capture.events if e == "progress"] == [(i, 6) for i in range(1, 7)]
    whole = capture.output("1")(capture.output("2").movedim(-1, 1)).movedim(1, -1)
    assert (capture.output("3") - whole).abs().mean() < 1e-3

    interrupt = threading.Event()
    seen = []

    def on_event(name, data):
        if name == "progress":
            seen.append(data["value"])
            interrupt.set()

    checked = prepare(upscale_doc("esrgan_x2.safetensors", width=40, height=26), registry, runtime=runtime)
    result = capture.executor.execute(checked.plan, on_event=on_event, interrupt=interrupt)
    assert result.status == "interrupted" and seen == [1]


def test_bad_files_and_images_get_clear_errors(files, tmp_path):
    from safetensors.torch import save_file

    from nodes.upscale import ImageUpscaleWithModel

    save_file({"encoder.weight": torch.zeros(3, 3)}, str(tmp_path / "unknown.safetensors"))
    with pytest.raises(ModelLoadError, match="not an upscale model architecture"):
        load_upscale_model(tmp_path / "unknown.safetensors")
    torch.save({"model": threading.Lock}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeFormatError, match="weights_only"):
        load_upscale_model(tmp_path / "evil.pth")
    model = load_upscale_model(files["esrgan"])
    with pytest.raises(ValueError, match="takes 3-channel images; this image has 1 channels"):
        ImageUpscaleWithModel(context=None).execute(model, torch.rand(1, 8, 8, 1))


def test_upscale_models_are_model_handles_the_cache_and_free_cover(env):
    """An upscale model sits in the cache's "models" pool like a checkpoint: POST /free
    ``unload_models`` (``drop_pool``) and ``--model-cache-budget`` act on it."""
    from nodes.sd.runtime import ModelHandle

    capture = Capture(env)
    assert capture.run(upscale_doc("esrgan_x2.safetensors")).status == "success"
    handle = capture.output("1")
    assert isinstance(handle, ModelHandle) and handle.cache_pool == "models"
    assert handle.modules() == (handle.descriptor.model,) and handle.size_bytes() > 0
    cache = capture.executor.cache
    assert cache.pool_bytes("models") >= handle.size_bytes()
    cache.drop_pool("models")
    assert cache.pool_bytes("models") == 0
    # Another image: the upscale runs again and needs the model, which is loaded again.
    assert "1" in capture.run(upscale_doc("esrgan_x2.safetensors", width=32)).executed
