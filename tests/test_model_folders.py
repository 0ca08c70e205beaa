"""Model folders and ComfyUI's extra_model_paths.yaml."""

import shutil
from pathlib import Path

import pytest

from graph.paths import UnsafePathError
from nodes.models.folders import ModelFolders, load_extra_model_paths, model_choices
from nodes.sd.runtime import DeviceSettings, Runtime

pytest_plugins = ["tests.fixtures.tiny_models"]


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
    assert model_choices("checkpoints")(Runtime(models=folders)) == ["b.ckpt", "sd15/a.safetensors"]
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


def _disk_elsewhere(tmp_path):
    """A checkpoint and a folder of them on "another disk", linked into models/checkpoints."""
    other = tmp_path / "other_disk"
    (other / "sdxl").mkdir(parents=True)
    (other / "linked.safetensors").write_bytes(b"a")
    (other / "sdxl" / "base.safetensors").write_bytes(b"b")
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "linked.safetensors").symlink_to(other / "linked.safetensors")
    (checkpoints / "xl").symlink_to(other / "sdxl", target_is_directory=True)
    (checkpoints / "broken.safetensors").symlink_to(other / "gone.safetensors")
    (checkpoints / "xl" / "loop").symlink_to(checkpoints, target_is_directory=True)  # a cycle
    return other, ModelFolders(tmp_path / "models")


def test_symlinked_models_are_listed_and_resolve_as_in_comfyui(tmp_path):
    other, folders = _disk_elsewhere(tmp_path)
    listed = folders.list("checkpoints")
    # the cycle lists each real folder once; a link to nothing is not listed
    assert listed == ["linked.safetensors", "xl/base.safetensors"]
    assert [folders.resolve("checkpoints", name) for name in listed] == [
        (other / "linked.safetensors").resolve(), (other / "sdxl" / "base.safetensors").resolve()]
    with pytest.raises(FileNotFoundError):
        folders.resolve("checkpoints", "broken.safetensors")
    with pytest.raises(UnsafePathError):  # a name alone still cannot climb out
        folders.resolve("checkpoints", "../../other_disk/linked.safetensors")


def test_a_symlinked_checkpoint_validates_and_loads(tmp_path, tiny_checkpoints):
    """Before, it was listed and passed validation, then failed: "path leaves its folder"."""
    import torch

    from graph import Executor, Folders, build_registry, prepare

    (tmp_path / "disk").mkdir()
    shutil.copy(tiny_checkpoints.sd1, tmp_path / "disk" / "tiny.safetensors")
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "tiny.safetensors").symlink_to(tmp_path / "disk" / "tiny.safetensors")
    folders = Folders.under(tmp_path)
    runtime = Runtime(folders=folders, models=ModelFolders(tmp_path / "models"), settings=DeviceSettings(device="cpu", dtype=torch.float32))
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
              "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
              "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
              "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
              "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}}
    registry = build_registry("nodes", None)
    checked = prepare(prompt, registry, runtime=runtime)
    assert checked.ok, checked.response()
    result = Executor(folders=folders, runtime=runtime).execute(checked.plan)
    assert result.outputs["5"]["images"]


def test_folders_clients_write_to_still_refuse_links_that_lead_out(tmp_path):
    """Input, output, temp and user data use safe_join and the default listing: a link out of
    the folder is neither opened nor listed (so listing and loading agree there too)."""
    from graph.paths import list_files, safe_join

    other, _ = _disk_elsewhere(tmp_path)
    inside = tmp_path / "input"
    inside.mkdir()
    (inside / "real.safetensors").write_bytes(b"c")
    (inside / "alias.safetensors").symlink_to(inside / "real.safetensors")
    (inside / "out.safetensors").symlink_to(other / "linked.safetensors")
    (inside / "outdir").symlink_to(other / "sdxl", target_is_directory=True)
    assert list_files(inside, (".safetensors",)) == ["alias.safetensors", "real.safetensors"]
    with pytest.raises(UnsafePathError):
        safe_join(inside, "out.safetensors")
    with pytest.raises(UnsafePathError):
        safe_join(inside, "outdir/base.safetensors")
