"""Driving the server with an existing third-party ComfyUI client: comfy-api-simplified (PyPI)."""

from __future__ import annotations

import io
import json
import shutil

import comfy_api_simplified
import comfy_api_simplified.exceptions
import pytest
import requests
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


# Other client libraries from PyPI, each driven as its own README shows (README, "Client libraries").


def _house_workflow(steps: int = 4, seed: int = 42) -> dict:
    document = json.loads((REPO / "workflows" / "txt2img_api.json").read_text())
    document["3"]["inputs"].update(steps=steps, seed=seed)  # few steps: a quick test on a busy CPU
    return document


def _assert_house_png(data: bytes, steps: int) -> None:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (128, 128)
    prompt = json.loads(image.text["prompt"])
    assert prompt["3"]["inputs"]["steps"] == steps and prompt["4"]["inputs"]["ckpt_name"] == HOUSE_MODEL


def _async_tool_events(url: str, workflow: dict, values: dict) -> list[dict]:
    # comfyui-async-api-tool's README: ComfyClient(session, servers=[...]).run(workflow, values=...)
    # streams start -> progress (from the websocket's progress messages) -> image (/history + /view).
    import asyncio

    import aiohttp
    from comfyui_async_api_tool import ComfyClient

    async def main() -> list[dict]:
        async with aiohttp.ClientSession() as session:
            client = ComfyClient(session, servers=[url])
            return [event async for event in client.run(workflow, values=values)]

    return asyncio.run(main())


def test_comfyui_async_api_tool_round_trip(server):
    # The library posts the prompt, then opens its websocket and polls /queue: a prompt that ends
    # before that first poll is never seen, and it listens for 30 minutes (against ComfyUI too).
    # So the prompt takes a few seconds, as real ones do (DelayedValue feeds the colour).
    workflow = {"8": {"class_type": "DelayedValue", "inputs": {"seconds": 3.0, "value": 10}},
                "9": {"class_type": "SaveTestImage", "inputs": {"red": ["8", 0], "filename_prefix": "async_tool"}}}
    events = _async_tool_events(server.url, workflow, {"8": {"value": 55}})
    assert [e for e in events if e["type"] == "error"] == []
    assert events[0]["type"] == "start" and events[0]["data"]["server_url"] == server.url
    images = [e["data"] for e in events if e["type"] == "image"]
    assert len(images) == 1
    assert Image.open(io.BytesIO(images[0])).getpixel((0, 0)) == (55, 0, 0)
    assert workflow["8"]["inputs"]["value"] == 10  # run() edits a copy, as its README says


@pytest.mark.slow  # generates an image with the house model
def test_comfyui_async_api_tool_txt2img_streams_progress(house_server):
    events = _async_tool_events(house_server.url, _house_workflow(steps=6, seed=7), {"3": {"seed": 42}})
    assert [e for e in events if e["type"] == "error"] == []
    progress = [e["data"] for e in events if e["type"] == "progress"]
    # Its progress only moves off 0 on the websocket's `progress` messages for the prompt (then smoothed).
    assert any(0 < value < 100 for value in progress), progress
    assert progress[-1] == 100.0
    images = [e for e in events if e["type"] == "image"]
    assert len(images) == 1 and images[0]["generation_ms"] > 0  # from execution_start/_success timestamps
    _assert_house_png(images[0]["data"], steps=6)


def _comfyapi_round_trip(url: str, workflow_file, edits: dict, save_path) -> tuple[str, bytes]:
    # comfyapi's README ("Recommended: ComfyAPIManager"): load, edit by path, submit, poll
    # check_queue, find_output, download_output. It polls /history; no websocket.
    import time

    from comfyapi import ComfyAPIManager

    manager = ComfyAPIManager()
    manager.set_base_url(url)
    manager.load_workflow(str(workflow_file))
    for path, value in edits.items():
        manager.edit_workflow(list(path), value)
    prompt_id = manager.submit_workflow()
    deadline = time.monotonic() + 120
    while not manager.check_queue(prompt_id):
        assert time.monotonic() < deadline, "comfyapi never saw the prompt finish"
        time.sleep(0.2)
    output_url, filename = manager.find_output(prompt_id, with_filename=True)
    manager.download_output(output_url, save_path=str(save_path), filename=filename)
    return filename, (save_path / filename).read_bytes()


def test_comfyapi_manager_round_trip(server, tmp_path):
    workflow_file = tmp_path / "workflow.json"
    workflow_file.write_text(json.dumps(
        {"9": {"class_type": "SaveTestImage", "inputs": {"red": 10, "filename_prefix": "comfyapi"}}}))
    filename, data = _comfyapi_round_trip(server.url, workflow_file, {("9", "inputs", "red"): 77},
                                          tmp_path / "downloads")
    assert filename.startswith("comfyapi_")
    assert Image.open(io.BytesIO(data)).getpixel((0, 0)) == (77, 0, 0)


@pytest.mark.slow  # generates an image with the house model
def test_comfyapi_manager_txt2img(house_server, tmp_path):
    workflow_file = tmp_path / "txt2img_api.json"
    workflow_file.write_text(json.dumps(_house_workflow()))
    filename, data = _comfyapi_round_trip(
        house_server.url, workflow_file,
        {("6", "inputs", "text"): "a beautiful landscape painting", ("3", "inputs", "seed"): 123456},
        tmp_path / "output_images")
    assert filename.startswith("txt2img_") and filename.endswith(".png")
    _assert_house_png(data, steps=4)


@pytest.mark.slow  # generates images with the house model
def test_comfy_headless_generate_image_and_websocket_client(house_server):
    # comfy-headless's README: ComfyClient(url).generate_image(prompt, ..., on_progress=...) builds its own
    # txt2img graph (checkpoint picked from /object_info), polls, and names the saved images.
    import asyncio

    from comfy_headless import ComfyClient, ComfyWSClient

    client = ComfyClient(house_server.url)
    reported = []
    result = client.generate_image("a small red circle on a blue background", width=128, height=128,
                                   steps=4, seed=42, on_progress=lambda pct, msg: reported.append(pct))
    assert result["success"], result
    assert reported[-1] == 1.0
    (image,) = result["images"]
    assert image["filename"].startswith("comfy_headless_") and image["type"] == "output"
    _assert_house_png(client.get_image(image["filename"], image["subfolder"], image["type"]), steps=4)

    # "For real-time updates over WebSocket": ComfyWSClient queues on its own client id and reads
    # progress, executing and execution_success messages for that prompt.
    async def over_websocket():
        seen = []

        async def on_progress(progress):
            seen.append(progress)

        async with ComfyWSClient(house_server.url) as ws:
            prompt_id = await ws.queue_prompt(_house_workflow(steps=5, seed=11))
            final = await ws.wait_for_completion(prompt_id, timeout=120, on_progress=on_progress)
        return prompt_id, final, seen

    prompt_id, final, seen = asyncio.run(over_websocket())
    assert final.status == "completed"
    steps = [(p.progress, p.max_progress) for p in seen if p.status == "progress"]
    assert steps and steps[-1] == (5, 5)
    entry = requests.get(f"{house_server.url}/history/{prompt_id}", timeout=10).json()[prompt_id]
    assert entry["status"]["status_str"] == "success"
    (saved,) = entry["outputs"]["9"]["images"]
    _assert_house_png(client.get_image(saved["filename"], saved["subfolder"], saved["type"]), steps=5)
