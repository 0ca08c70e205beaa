"""Model folders and ComfyUI's extra_model_paths.yaml."""

from pathlib import Path

import pytest

from graph.paths import UnsafePathError
from nodes.model_folders import ModelFolders, load_extra_model_paths, model_choices


def test_lists_and_resolves_models_across_folders(tmp_path):
    (tmp_path / "models" / "checkpoints" / "sd15").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "sd15" / "a.safetensors").write_bytes(b"x")
    (tmp_path / "models" / "checkpoints" / "notes.txt").write_text("no")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.ckpt").write_bytes(b"y")
    (tmp_path / "outside.safetensors").write_bytes(b"z")
    folders = ModelFolders(tmp_path / "models", {"checkpoints": [tmp_path / "elsewhere"]})
    assert folders.list("checkpoints") == ["b.ckpt", "sd15/a.safetensors"]
    assert folders.resolve("checkpoints", "b.ckpt") == (tmp_path / "elsewhere" / "b.ckpt").resolve()
    with pytest.raises(FileNotFoundError):
        folders.resolve("checkpoints", "missing.safetensors")
    with pytest.raises(UnsafePathError):
        folders.resolve("checkpoints", "../../outside.safetensors")
    assert model_choices("checkpoints")({"models": folders}) == ["b.ckpt", "sd15/a.safetensors"]
    assert folders.list("loras") == []


def test_extra_model_paths_yaml(tmp_path):
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(
        "a111:\n"
        "    base_path: /opt/webui\n"
        "    checkpoints: models/Stable-diffusion\n"
        "    upscale_models: |\n"
        "        models/ESRGAN\n"
        "        models/RealESRGAN\n"
        "local:\n"
        "    base_path: shared\n"
        "    is_default: true\n"
        "    loras: loras\n"
    )
    extra = load_extra_model_paths(config)
    assert extra["checkpoints"] == [Path("/opt/webui/models/Stable-diffusion")]
    assert [str(p) for p in extra["upscale_models"]] == ["/opt/webui/models/ESRGAN", "/opt/webui/models/RealESRGAN"]
    assert extra["loras"] == [tmp_path / "shared" / "loras"]
    assert "is_default" not in extra


def test_a_diffusers_folder_is_listed_as_one_model(tmp_path):
    bundle = tmp_path / "models" / "checkpoints" / "my_model"
    (bundle / "unet").mkdir(parents=True)
    (bundle / "model_index.json").write_text("{}")
    (bundle / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    (tmp_path / "models" / "checkpoints" / "single.safetensors").write_bytes(b"y")
    folders = ModelFolders(tmp_path / "models")
    assert folders.list("checkpoints") == ["my_model", "single.safetensors"]
    assert folders.resolve("checkpoints", "my_model") == bundle.resolve()
