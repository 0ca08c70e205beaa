"""ComfyUI's two-folder kinds and their former names (its folder_paths: ``diffusion_models``
is ``models/unet`` + ``models/diffusion_models``, ``text_encoders`` is
``models/text_encoders`` + ``models/clip``; ``map_legacy`` maps ``unet`` and ``clip`` to
them), in the model folders and in the model-library routes the official frontend reads."""

from __future__ import annotations

import pytest
import requests

from nodes.models.folders import ModelFolders
from tests.server_support import ServerThread, make_config


@pytest.fixture
def models(tmp_path):
    root = tmp_path / "models"
    for folder, name in (("unet", "old_unet.safetensors"), ("diffusion_models", "new_unet.safetensors"),
                         ("clip", "old_te.safetensors"), ("text_encoders", "new_te.safetensors")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_bytes(b"x" * 8)
    extra = tmp_path / "elsewhere"
    (extra / "te").mkdir(parents=True)
    (extra / "te" / "extra_te.safetensors").write_bytes(b"x")
    (tmp_path / "extra.yaml").write_text(f"other:\n  base_path: {extra}\n  clip: te\n")
    return root


def test_either_name_gives_both_folders_in_comfyuis_order(models, tmp_path):
    folders = ModelFolders.from_configs(models, [tmp_path / "extra.yaml"])
    assert folders.folders("diffusion_models") == folders.folders("unet") == [models / "unet",
                                                                            models / "diffusion_models"]
    # An extra_model_paths.yaml key "clip" adds to text_encoders, as ComfyUI's map_legacy does.
    assert folders.folders("clip") == folders.folders("text_encoders") == [
        models / "text_encoders", models / "clip", tmp_path / "elsewhere" / "te"]
    assert folders.list("text_encoders") == ["extra_te.safetensors", "new_te.safetensors", "old_te.safetensors"]
    assert folders.list("unet") == folders.list("diffusion_models") == ["new_unet.safetensors",
                                                                         "old_unet.safetensors"]
    assert folders.resolve("diffusion_models", "old_unet.safetensors") == models / "unet" / "old_unet.safetensors"
    kinds = folders.kinds()
    assert {"diffusion_models", "text_encoders"} <= set(kinds) and not {"unet", "clip"} & set(kinds)


def test_the_model_library_lists_them_as_comfyui(models, tmp_path):
    config = make_config(tmp_path, models_directory=models, extra_model_paths_config=[tmp_path / "extra.yaml"])
    with ServerThread(config) as server:
        listed = {entry["name"]: entry["folders"] for entry in
                  requests.get(f"{server.url}/api/experiment/models", timeout=10).json()}
        assert "unet" not in listed and "clip" not in listed
        assert listed["diffusion_models"] == [str((models / "unet").resolve()),
                                              str((models / "diffusion_models").resolve())]
        assert listed["text_encoders"][:2] == [str((models / "text_encoders").resolve()),
                                               str((models / "clip").resolve())]
        files = requests.get(f"{server.url}/api/experiment/models/diffusion_models", timeout=10).json()
        # pathIndex: which of the kind's folders holds it (0 is models/unet), as ComfyUI answers.
        assert sorted((f["name"], f["pathIndex"], f["size"]) for f in files) == [
            ("new_unet.safetensors", 1, 8), ("old_unet.safetensors", 0, 8)]
        files = requests.get(f"{server.url}/api/experiment/models/text_encoders", timeout=10).json()
        assert sorted((f["name"], f["pathIndex"]) for f in files) == [
            ("extra_te.safetensors", 2), ("new_te.safetensors", 0), ("old_te.safetensors", 1)]
        paths = requests.get(f"{server.url}/internal/folder_paths", timeout=10).json()
        assert paths["diffusion_models"] == listed["diffusion_models"] and "unet" not in paths
        # ComfyUI's /experiment/models/{folder} knows only the current names.
        assert requests.get(f"{server.url}/api/experiment/models/unet", timeout=10).status_code == 404
