"""``python -m graph`` finds models as the server does: the installation's models/ wherever
it runs, ``--models-directory`` and ``--extra-model-paths-config`` (ComfyUI's flag names)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / "workflows" / "txt2img_api.json"  # CheckpointLoaderSimple with the house model
HOUSE = REPO / "models" / "checkpoints" / "latentgraph-house-v1.safetensors"

pytestmark = pytest.mark.skipif(not HOUSE.is_file(), reason="the committed house model is missing")


def validate(cwd: Path, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "graph", "--disable-all-custom-nodes", "validate", str(WORKFLOW), *flags]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_from_another_directory_the_installations_models_are_found(tmp_path):
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)  # a models/ here is not looked at
    result = validate(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: 7 node(s)")


def test_models_directory_and_extra_model_paths_config(tmp_path):
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    result = validate(tmp_path, "--models-directory", "empty")  # relative to the working directory
    assert result.returncode == 1
    assert "ckpt_name" in result.stdout and "value_not_in_list" in result.stdout
    (tmp_path / "extra.yaml").write_text(f"mine:\n  base_path: {REPO / 'models'}\n  checkpoints: checkpoints\n")
    result = validate(tmp_path, "--models-directory", "empty", "--extra-model-paths-config", "extra.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    result = validate(tmp_path, "--extra-model-paths-config", "missing.yaml")
    assert result.returncode == 1 and "missing.yaml: no such file" in result.stderr
