"""Folders come from the installation (or --base-directory), never from the working directory.

ComfyUI finds its folders from where it is installed; `python /path/to/server.py` started
anywhere must serve the editor and list the installation's checkpoints, and a server that
finds no checkpoint says so at start-up.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import requests

from latentgraph_server.config import INSTALL_ROOT, config_from_args
from nodes.models.folders import ModelFolders, no_checkpoint_warning
from tests.server_support import REPO, free_port, make_config

HOUSE_MODEL = "latentgraph-house-v1.safetensors"


def test_defaults_lie_in_the_installation_wherever_the_server_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_from_args([])
    assert INSTALL_ROOT == REPO
    assert (config.input_directory, config.output_directory, config.temp_directory, config.models_directory,
            config.user_directory, config.custom_nodes_directory, config.database) == (
        REPO / "input", REPO / "output", REPO / "temp", REPO / "models", REPO / "user", REPO / "custom_nodes",
        REPO / "latentgraph_queue.sqlite3")
    assert config.web_directory == REPO / "web" and config.examples_directory == REPO / "workflows"


def test_base_directory_moves_the_data_folders_and_explicit_flags_win(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_from_args(["--base-directory", "base", "--output-directory", "elsewhere/out"])
    base = tmp_path / "base"
    assert (config.input_directory, config.temp_directory, config.models_directory, config.user_directory,
            config.custom_nodes_directory, config.database) == (
        base / "input", base / "temp", base / "models", base / "user", base / "custom_nodes",
        base / "latentgraph_queue.sqlite3")
    assert config.output_directory == tmp_path / "elsewhere" / "out"  # a given folder: from the working directory
    assert config.web_directory == REPO / "web"  # the editor and examples belong to the installation


def test_no_checkpoint_is_a_clear_warning(tmp_path, caplog):
    empty = ModelFolders(tmp_path / "models")
    message = no_checkpoint_warning(empty)
    assert message and str((tmp_path / "models" / "checkpoints").resolve()) in message
    assert "--base-directory" in message
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "a.safetensors").write_bytes(b"x")
    assert no_checkpoint_warning(empty) is None

    import server

    with caplog.at_level(logging.WARNING):
        server.create_app(make_config(tmp_path / "bare"))
    assert any("no checkpoint found" in record.getMessage() for record in caplog.records)


def test_server_py_started_from_another_folder_serves_the_editor_and_lists_checkpoints(tmp_path):
    """The data folders are redirected into tmp_path so the test leaves the checkout alone;
    models, custom nodes, the editor and the examples come from the installation."""
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    port = free_port()
    data = tmp_path / "data"
    command = [sys.executable, str(REPO / "server.py"), "--port", str(port), "--cpu",
               "--input-directory", str(data / "input"), "--output-directory", str(data / "output"),
               "--temp-directory", str(data / "temp"), "--user-directory", str(data / "user"),
               "--database", str(data / "queue.sqlite3")]
    env = {**os.environ, "PYTHONPATH": ""}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                index = requests.get(url + "/", timeout=5)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
        assert "<html" in index.text.lower() and "Latentgraph is running" not in index.text
        choices = requests.get(url + "/object_info/CheckpointLoaderSimple", timeout=30).json()
        assert HOUSE_MODEL in choices["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    finally:
        process.terminate()
        output = process.communicate(timeout=60)[0]
    assert list(cwd.iterdir()) == []  # nothing made where it was started
    assert "no checkpoint found" not in output
