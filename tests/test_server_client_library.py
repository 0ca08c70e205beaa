"""Driving the server with an existing third-party ComfyUI client: comfy-api-simplified (PyPI)."""

from __future__ import annotations

import io
import json
import shutil

import comfy_api_simplified
import comfy_api_simplified.exceptions
import pytest
from PIL import Image

from tests.server_support import REPO, ServerThread, make_config


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerThread(make_config(tmp_path_factory.mktemp("client"), cpu=True)) as running:
        yield running


def test_comfy_api_simplified_round_trip(server, tmp_path):
    api = comfy_api_simplified.ComfyApiWrapper(server.url)
    assert "SaveTestImage" in api.get_object_info()
    assert api.get_object_info("NumberSource")["NumberSource"]["output"] == ["INT"]
    workflow = comfy_api_simplified.ComfyWorkflowWrapper({
        "9": {"class_type": "SaveTestImage", "inputs": {"red": 10, "filename_prefix": "lib"},
              "_meta": {"title": "Save Image"}},
    })
    workflow.set_node_param("Save Image", "red", 123)
    images = api.queue_and_wait_images(workflow, "Save Image")
    assert len(images) == 1
    (name, data), = images.items()
    assert name.startswith("lib_")
    assert Image.open(io.BytesIO(data)).getpixel((0, 0)) == (123, 0, 0)

    picture = tmp_path / "upload.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(picture)
    assert api.upload_image(picture, subfolder="from_lib") == {
        "name": "upload.png", "subfolder": "from_lib", "type": "input"}
    assert api.get_queue() == {"queue_running": [], "queue_pending": []}
    assert api.get_system_stats()["devices"]
    api.interrupt()


def test_comfy_api_simplified_reports_execution_errors(server):
    api = comfy_api_simplified.ComfyApiWrapper(server.url)
    # The delay lets the client connect its websocket (it does so after queueing) before the failure.
    workflow = {"0": {"class_type": "DelayedValue", "inputs": {"seconds": 1.0, "value": 1}},
                "1": {"class_type": "Fail", "inputs": {"value": ["0", 0]}},
                "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}, "_meta": {"title": "Show"}}}
    with pytest.raises(comfy_api_simplified.exceptions.ComfyApiError):
        api.queue_and_wait_images(workflow, "Show")


HOUSE_MODEL = "latentgraph-house-v1.safetensors"


@pytest.fixture(scope="module")
def house_server(tmp_path_factory):
    """Default server flags, our built-in nodes and the committed house model."""
    root = tmp_path_factory.mktemp("client_house")
    (root / "models" / "checkpoints").mkdir(parents=True)
    shutil.copy(REPO / "models" / "checkpoints" / HOUSE_MODEL, root / "models" / "checkpoints" / HOUSE_MODEL)
    with ServerThread(make_config(root, cpu=True, node_packages=["nodes"])) as running:
        yield running


@pytest.mark.slow  # generates an image with the house model
def test_queue_and_wait_images_returns_the_saved_png_with_its_metadata(house_server, tmp_path):
    # Driven as comfy-api-simplified's README shows: a workflow exported from ComfyUI in API format
    # (which gives every node a _meta title), a parameter set by node title, then queue_and_wait_images.
    document = json.loads((REPO / "workflows" / "txt2img_api.json").read_text())
    titles = {"SaveImage": "Save Image", "KSampler": "KSampler", "EmptyLatentImage": "Empty Latent Image",
              "VAEDecode": "VAE Decode"}
    for node in document.values():
        if "_meta" not in node:
            node["_meta"] = {"title": titles[node["class_type"]]}
    exported = tmp_path / "workflow_api.json"
    exported.write_text(json.dumps(document))

    api = comfy_api_simplified.ComfyApiWrapper(house_server.url)
    workflow = comfy_api_simplified.ComfyWorkflowWrapper(str(exported))
    workflow.set_node_param("KSampler", "steps", 4)  # fewer steps: a quick test on a busy CPU
    results = api.queue_and_wait_images(workflow, "Save Image")

    # Before previews were opt-in, this returned one 16x16 JPEG preview frame per step instead.
    assert len(results) == 1
    (name, data), = results.items()
    assert name.startswith("txt2img_") and name.endswith(".png")
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (128, 128)
    prompt = json.loads(image.text["prompt"])
    assert prompt["3"]["inputs"]["steps"] == 4 and prompt["4"]["inputs"]["ckpt_name"] == HOUSE_MODEL
