"""The headless CLI: python -m graph run|validate|nodes|convert, with its exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from graph.cli import apply_overrides
from tests.test_engine_ui_format import document, ui_node

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, cwd=ROOT, nodes="tests.engine_nodes"):
    command = [sys.executable, "-m", "graph", "--nodes-package", nodes, "--disable-all-custom-nodes", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return path


GOOD = {"1": {"class_type": "NumberSource", "inputs": {"value": 3}},
        "2": {"class_type": "AddInts", "inputs": {"a": ["1", 0], "b": 4}},
        "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}


def test_run_success_prints_progress(tmp_path):
    result = cli("run", write(tmp_path, "good.json", GOOD))
    assert result.returncode == 0, result.stderr
    assert "▸ 2 AddInts" in result.stderr


def test_run_invalid_workflow_exits_1_with_per_node_errors(tmp_path):
    bad = json.loads(json.dumps(GOOD))
    bad["1"]["inputs"]["value"] = 5000
    bad["2"]["inputs"].pop("b")
    result = cli("run", write(tmp_path, "bad.json", bad))
    assert result.returncode == 1
    assert "node 1 (NumberSource)" in result.stderr and "bigger than max" in result.stderr
    assert "node 2 (AddInts)" in result.stderr and "input 'b': Required input is missing" in result.stderr


def test_run_failing_node_exits_2(tmp_path):
    failing = {"1": {"class_type": "Fail", "inputs": {"value": 1}},
               "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    result = cli("run", write(tmp_path, "fail.json", failing))
    assert result.returncode == 2
    assert "node 1 (Fail) failed: failing on purpose with 1" in result.stderr


def test_set_overrides_an_input(tmp_path):
    path = write(tmp_path, "good.json", GOOD)
    assert cli("run", path, "--set", "1.value=5000").returncode == 1
    assert cli("run", path, "--set", "1.value=7").returncode == 0
    bad = cli("run", path, "--set", "9.value=7")
    assert bad.returncode != 0 and "no node '9'" in bad.stderr


def test_apply_overrides_parses_json_values():
    updated = apply_overrides(GOOD, ["1.value=12", "2.label=hello", "2.items=[1,2]"])
    assert updated["1"]["inputs"]["value"] == 12
    assert updated["2"]["inputs"]["label"] == "hello"
    assert updated["2"]["inputs"]["items"] == {"__value__": [1, 2]}
    assert GOOD["1"]["inputs"]["value"] == 3  # the original is untouched
    with pytest.raises(SystemExit):
        apply_overrides(GOOD, ["no-equals-sign"])


def test_validate_and_convert_and_nodes(tmp_path):
    ok = cli("validate", write(tmp_path, "good.json", GOOD))
    assert ok.returncode == 0 and "3 node(s)" in ok.stdout
    ui = document([ui_node(1, "NumberSource", [5]), ui_node(2, "ShowValue", inputs=[("value", "*", 1)])],
                  [[1, 1, 0, 2, 0, "INT"]])
    converted = cli("convert", write(tmp_path, "ui.json", ui))
    assert converted.returncode == 0
    assert json.loads(converted.stdout) == {"1": {"class_type": "NumberSource", "inputs": {"value": 5}},
                                            "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    listing = cli("nodes", "--json")
    info = json.loads(listing.stdout)
    assert info["AddInts"]["input_order"] == {"required": ["a", "b"]}
    assert "NumberSource" in cli("nodes").stdout


def test_demo_workflow_saves_an_image(tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    result = cli("run", ROOT / "workflows" / "demo_api.json", "--output-directory", out, nodes="nodes")
    assert result.returncode == 0, result.stderr
    (path,) = [Path(line) for line in result.stdout.splitlines()]
    assert path.resolve() == (out / "demo_00001_.png").resolve()
    image = Image.open(path)
    assert image.size == (128, 64)
    # 0x3399FF inverted is 0xCC6600
    assert image.getpixel((10, 10)) == (0xCC, 0x66, 0x00)
    assert json.loads(image.text["prompt"])["3"]["class_type"] == "ImageInvert"
