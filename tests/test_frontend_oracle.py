"""UI-format conversion against ComfyUI's official frontend.

tests/data/frontend_oracle/*.json hold the API documents the official frontend
(``comfyui-frontend-package``, the version is in each file) posted to ``/prompt`` after
loading a workflow, given our ``/object_info``; tools/capture_frontend_prompts.py recorded
them in Chromium. Our converter must produce the same prompt: the same node ids, classes
and inputs. The workflows are ComfyUI's classic default workflow, a subgraph with exposed
widgets in the current and in the older (proxyWidgets) format, two instances of one
subgraph with their own values, older layouts and values the frontend fixes up on load,
ComfyUI templates whose nodes we all have, and our own examples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from graph import build_registry
from graph.ui_format import ui_to_api
from nodes.sd.runtime import Runtime
from tools.capture_frontend_prompts import placeholder_models

REPO = Path(__file__).resolve().parent.parent
ORACLE = REPO / "tests" / "data" / "frontend_oracle"
RECORDS = sorted(ORACLE.glob("*.json"))


@pytest.fixture(scope="module")
def registry():
    return build_registry("nodes", None)


def _workflow(source: str) -> dict[str, Any]:
    if source.startswith("template:"):
        templates = pytest.importorskip("comfyui_workflow_templates_json", reason="ComfyUI's templates (test extra)")
        return json.loads((Path(templates.__file__).parent / "templates" / source[len("template:"):]).read_text())
    return json.loads((REPO / source).read_text(encoding="utf-8"))


def test_the_oracle_covers_the_cases_the_issue_names():
    names = {path.stem for path in RECORDS}
    assert {"default", "older_layouts", "subgraph_exposed_widgets", "subgraph_two_instances",
            "subgraph_proxy_widgets"} <= names
    assert sum(name.startswith("template_") for name in names) >= 4


@pytest.mark.parametrize("record", RECORDS, ids=[path.stem for path in RECORDS])
def test_conversion_equals_what_the_official_frontend_sends(registry, record, tmp_path):
    captured = json.loads(record.read_text(encoding="utf-8"))
    assert captured["frontend_version"]
    workflow = _workflow(captured["workflow"])
    # The same model lists as the frontend was given (an empty file combo takes the first).
    runtime = Runtime(models=placeholder_models(tmp_path / "models", captured["models"]))
    ours = ui_to_api(workflow, registry, runtime)
    theirs = captured["prompt"]
    assert sorted(ours) == sorted(theirs)
    for node_id, node in theirs.items():
        assert ours[node_id]["class_type"] == node["class_type"], node_id
        assert ours[node_id]["inputs"] == node["inputs"], f"node {node_id} ({node['class_type']})"
        # The frontend always sends a title (the node's own, else its display name); we send
        # the saved ones, which must agree.
        if "_meta" in ours[node_id]:
            assert ours[node_id]["_meta"]["title"] == node["_meta"]["title"], node_id


def test_comfyui_default_workflow_converts_to_a_runnable_txt2img(registry):
    """The issue's case: before, ``steps: true, cfg: 20, sampler_name: 8`` and no prefix."""
    api = ui_to_api(_workflow("tests/data/frontend_oracle/workflows/default.json"), registry)
    assert api["3"]["inputs"] | {"model": None, "positive": None, "negative": None, "latent_image": None} == {
        "seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
        "denoise": 1, "model": None, "positive": None, "negative": None, "latent_image": None}
    assert api["9"]["inputs"]["filename_prefix"] == registry.get("SaveImage").inputs["filename_prefix"].default
