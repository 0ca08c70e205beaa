"""ComfyUI's five classic ControlNet templates run here unchanged (issue 16).

``controlnet_example`` (LoadImage -> Canny -> scribble ControlNet), ``2_pass_pose_worship``
(openpose ControlNet, CLIPSetLastLayer, LatentUpscale, a second checkpoint's img2img
pass), ``depth_controlnet``, ``depth_t2i_adapter`` (a T2I-Adapter loaded through
ControlNetLoader, the apply node given the checkpoint's VAE) and ``mixing_controlnets``
(two ControlNets chained), as shipped in PyPI's ``comfyui-workflow-templates`` 0.1.95
(test extra; the JSON-only package the other template tests use no longer has them;
0.1.95 is the last 0.1.x, an 84 MB wheel of previews; 0.2.x rebuilt ``depth_t2i_adapter``
around a Lotus depth-estimation subgraph and another adapter file).

Each template is read from the installed package in its saved UI format and converted by
``graph.ui_format.ui_to_api``. Every file it names exists under exactly that name: the
checkpoints are the tiny SD1 test checkpoint, the ``vae-ft-mse-...`` file the tiny SD1
VAE, each ``control_v11*_fp16`` a tiny fp16 SD1 ControlNet in the LDM layout
(``control_model.*``; unlike the real files it carries its architecture in the
metadata, as the tiny shapes match no SD1 config), ``controlnetT2IAdapter_t2iAdapterDepth``
a tiny fp16 full SD1 T2I-Adapter in TencentARC's layout, and each input image (``pasted/image (2).png`` in its
subfolder) a small generated picture of a shape, the depth inputs greyscale.

The one change to the converted prompt, for speed on the CPU: EmptyLatentImage is 64x48
(saved: 1024x1024), LatentUpscale 96x72 (saved: 1536x1536) and every KSampler takes 2
steps (saved: 10 or 20). Seeds, samplers, schedulers, cfg, denoise, strengths, texts,
links and file names are as saved. The unchanged documents (full size) are validated too,
both the UI document and its conversion, through the engine's ``prepare`` as POST /prompt
calls it. Each shrunk prompt is also run with every apply node's strength at 0, to show
that the ControlNets change the saved images. One test posts the shrunk prompts to a real server, as ComfyUI's frontend does
(API prompt, the template as ``extra_pnginfo.workflow``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from graph import Engine
from graph.ui_format import ui_to_api
from tests.fixtures.model_env import model_env
from tests.fixtures.tiny_controlnets import save_adapter, save_ldm, tiny_adapter, tiny_controlnet
from tests.server_support import ServerThread, make_config, submit, wait_history

templates = pytest.importorskip("comfyui_workflow_templates", reason="ComfyUI's templates (test extra)")
pytest_plugins = ["tests.fixtures.tiny_models"]

TEMPLATES = ("controlnet_example", "2_pass_pose_worship", "depth_controlnet", "depth_t2i_adapter",
             "mixing_controlnets")
LATENT = (64, 48)  # EmptyLatentImage width, height (pixels)
UPSCALED = (96, 72)  # LatentUpscale width, height (pixels)
STEPS = 2
# The widgets of each node type in the order ComfyUI 0.3.64 declares them (nodes.py,
# comfy_extras/nodes_canny.py); None marks the frontend's own widget after a seed
# ('control_after_generate': 'randomize') or LoadImage's upload button, which it never sends.
COMFY_WIDGETS = {
    "KSampler": ["seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"],
    "EmptyLatentImage": ["width", "height", "batch_size"],
    "LatentUpscale": ["upscale_method", "width", "height", "crop"],
    "CLIPSetLastLayer": ["stop_at_clip_layer"],
    "CLIPTextEncode": ["text"],
    "ControlNetApplyAdvanced": ["strength", "start_percent", "end_percent"],
    "Canny": ["low_threshold", "high_threshold"],
    "LoadImage": ["image", None, None],
    "CheckpointLoaderSimple": ["ckpt_name"], "VAELoader": ["vae_name"], "ControlNetLoader": ["control_net_name"],
    "SaveImage": ["filename_prefix"], "PreviewImage": [], "VAEDecode": [],
}
LOADERS = {"CheckpointLoaderSimple": "checkpoints", "VAELoader": "vae", "ControlNetLoader": "controlnet",
           "LoadImage": "input"}


def template(name: str) -> dict[str, Any]:
    """The saved UI-format template ``name`` from the installed package."""
    folder = Path(templates.get_templates_path())
    return json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))


def named_files(document: dict[str, Any]) -> dict[str, set[str]]:
    """The file names a template's loaders ask for, by folder kind (``LOADERS``)."""
    found: dict[str, set[str]] = {kind: set() for kind in LOADERS.values()}
    for node in document["nodes"]:
        if node["type"] in LOADERS:
            found[LOADERS[node["type"]]].add(node["widgets_values"][0])
    return found


def shrunk(prompt: dict[str, Any]) -> dict[str, Any]:
    """``prompt`` with the sizes and steps of the module docstring; nothing else changed."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptyLatentImage":
            inputs["width"], inputs["height"] = LATENT
        elif node["class_type"] == "LatentUpscale":
            inputs["width"], inputs["height"] = UPSCALED
        elif node["class_type"] == "KSampler":
            inputs["steps"] = STEPS
    return prompt


def _picture(size: tuple[int, int], seed: int, mode: str) -> Image.Image:
    """A black picture with a bright rectangle (Canny finds its edges) and a gradient."""
    generator = np.random.default_rng(seed)
    width, height = size
    pixels = np.zeros((height, width, 3), np.uint8)
    left, top = generator.integers(2, width // 3), generator.integers(2, height // 3)
    pixels[top:top + height // 2, left:left + width // 2] = generator.integers(160, 256, 3)
    pixels[..., 2] = np.maximum(pixels[..., 2], np.linspace(0, 90, width, dtype=np.uint8)[None])
    return Image.fromarray(pixels).convert(mode)


@pytest.fixture(scope="module")
def env(tiny_checkpoints, tmp_path_factory):
    """A models folder and input folder holding every file the five templates name."""
    root = tmp_path_factory.mktemp("controlnet_templates")
    made = root / "made"
    made.mkdir()
    wanted: dict[str, set[str]] = {kind: set() for kind in LOADERS.values()}
    for name in TEMPLATES:
        for kind, names in named_files(template(name)).items():
            wanted[kind] |= names
    unet = tiny_checkpoints.models["sd1"].unet
    nets = {}
    for seed, file_name in enumerate(sorted(wanted["controlnet"])):
        if "T2IAdapter" in file_name:  # a full SD1 adapter, as the depth adapter the template names
            net = tiny_adapter([32, 64], "full_adapter", seed=seed).half()
            nets[file_name] = save_adapter(net, made / file_name)
        else:  # the control_v11*_fp16 files: SD1 LDM layout, fp16 as their names say
            nets[file_name] = save_ldm(tiny_controlnet(unet, seed=seed, scale=0.5).half(), made / file_name)
    files = {"checkpoints": {name: tiny_checkpoints.sd1 for name in wanted["checkpoints"]},
             "vae": {name: tiny_checkpoints.vae for name in wanted["vae"]},
             "controlnet": nets}
    registry, runtime = model_env(root, files)
    for seed, file_name in enumerate(sorted(wanted["input"])):
        path = runtime.folders.input / file_name
        path.parent.mkdir(parents=True, exist_ok=True)  # 'pasted/image (2).png'
        _picture((40 + 8 * seed, 24 + 4 * seed), seed, "L" if "depth" in file_name else "RGB").save(path)
    for folder in (runtime.folders.output, runtime.folders.temp):
        folder.mkdir(parents=True, exist_ok=True)
    return root, registry, runtime


def expected_sizes(prompt: dict[str, Any], runtime: Any) -> dict[str, tuple[int, int]]:
    """(width, height) of the images each output node of ``prompt`` should show: a decoded
    latent is the EmptyLatentImage or LatentUpscale size; a Canny preview the input image's."""
    def size_of(link: list) -> tuple[int, int]:
        node = prompt[link[0]]
        kind, inputs = node["class_type"], node["inputs"]
        if kind in ("EmptyLatentImage", "LatentUpscale"):
            return inputs["width"], inputs["height"]
        if kind == "LoadImage":
            return Image.open(runtime.folders.input / inputs["image"]).size
        upstream = {"VAEDecode": "samples", "KSampler": "latent_image", "Canny": "image"}[kind]
        return size_of(inputs[upstream])

    return {node_id: size_of(node["inputs"]["images"]) for node_id, node in prompt.items()
            if node["class_type"] in ("SaveImage", "PreviewImage")}


def run(env, prompt: dict[str, Any]) -> dict[str, np.ndarray]:
    """Runs ``prompt`` on a fresh engine; the image of each output node, as pixels."""
    _, registry, runtime = env
    engine = Engine(registry, runtime)
    checked = engine.prepare(prompt)
    assert checked.ok, checked.response()
    result = engine.execute(checked.plan)
    assert result.status == "success", result.error and result.error.get("traceback")
    images = {}
    for node_id, output in result.outputs.items():
        (image,) = output["images"]
        folder = runtime.folders.output if image["type"] == "output" else runtime.folders.temp
        images[node_id] = np.asarray(Image.open(folder / image["subfolder"] / image["filename"]))
    return images


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_template_validates_unchanged(env, name):
    _, registry, runtime = env
    document = template(name)
    engine = Engine(registry, runtime)
    checked = engine.prepare(document)  # the UI document, as POST /prompt takes it
    assert checked.ok, checked.response()
    prompt = ui_to_api(document, registry, runtime=runtime)
    assert engine.prepare(prompt).ok
    saved = {str(node["id"]): node for node in document["nodes"]}
    notes = {node_id for node_id, node in saved.items() if node["type"] == "MarkdownNote"}
    assert set(prompt) == set(saved) - notes  # every node but the notes, under its own id
    for node_id, node in prompt.items():
        assert node["class_type"] == saved[node_id]["type"]
        # The values the frontend would send: the saved widget values by ComfyUI's order (the
        # seed as saved: 'randomize' changes it only after queueing), the links as saved.
        widgets = dict(zip(COMFY_WIDGETS[node["class_type"]], saved[node_id]["widgets_values"] or [], strict=False))
        widgets.pop(None, None)
        links = {entry["name"]: entry["link"] for entry in saved[node_id].get("inputs") or []
                 if entry.get("link") is not None}
        assert {name: value for name, value in node["inputs"].items() if name not in links} == widgets, node_id
        for name, link in links.items():
            source = next(row for row in document["links"] if row[0] == link)
            assert node["inputs"][name] == [str(source[1]), source[2]], (node_id, name)


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_template_runs_and_its_controlnets_take_part(env, name):
    _, registry, runtime = env
    prompt = shrunk(ui_to_api(template(name), registry, runtime=runtime))
    images = run(env, prompt)
    sizes = expected_sizes(prompt, runtime)
    assert set(images) == set(sizes)
    for node_id, pixels in images.items():
        assert pixels.shape == (sizes[node_id][1], sizes[node_id][0], 3), node_id
    # The same prompt with every apply node at strength 0 (no guidance) gives other images.
    unguided = copy.deepcopy(prompt)
    applies = [node for node in unguided.values() if node["class_type"] == "ControlNetApplyAdvanced"]
    assert applies
    for node in applies:
        node["inputs"]["strength"] = 0.0
    plain = run(env, unguided)
    saved = [node_id for node_id, node in prompt.items() if node["class_type"] == "SaveImage"]
    assert saved and all(not np.array_equal(images[node_id], plain[node_id]) for node_id in saved)


def test_the_templates_run_through_the_server(env, tmp_path):
    """POST /prompt as ComfyUI's frontend sends each template: no node errors, and it runs."""
    root, registry, runtime = env
    config = make_config(tmp_path, cpu=True, node_packages=["nodes"], models_directory=root / "models",
                         input_directory=runtime.folders.input)
    with ServerThread(config) as server:
        for name in TEMPLATES:
            document = template(name)
            prompt = shrunk(ui_to_api(document, registry, runtime=runtime))
            answer = submit(server.url, prompt, extra_data={"extra_pnginfo": {"workflow": document}})
            assert answer["node_errors"] == {}, (name, answer)
            entry = wait_history(server.url, answer["prompt_id"], timeout=120)
            assert entry["status"]["status_str"] == "success", (name, entry["status"])
            sizes = expected_sizes(prompt, runtime)
            assert set(entry["outputs"]) == set(sizes), name
            for node_id, output in entry["outputs"].items():
                (image,) = output["images"]
                folder = config.output_directory if image["type"] == "output" else config.temp_directory
                with Image.open(folder / image["subfolder"] / image["filename"]) as saved:
                    assert saved.size == sizes[node_id], (name, node_id)
                    if image["type"] == "output":  # the template travels in the PNG, as in ComfyUI
                        assert json.loads(saved.info["workflow"])["nodes"] == document["nodes"]


def test_the_model_files_are_what_the_templates_name(env):
    """Each ControlNetLoader file loads as its kind: the ``control_v11*`` files as SD1
    ControlNets, the depth T2I-Adapter as a full SD1 adapter (ComfyUI also loads adapters
    through ControlNetLoader)."""
    from nodes.controlnet.load import load_controlnet

    folder = env[0] / "models" / "controlnet"
    kinds = {path.name: load_controlnet(path) for path in folder.iterdir()}
    assert len(kinds) == 4
    for file_name, handle in kinds.items():
        assert handle.family == "sd1", file_name
        if "T2IAdapter" in file_name:
            assert handle.kind == "t2i_adapter" and handle.model.config.adapter_type == "full_adapter"
        else:
            assert handle.kind == "controlnet", file_name
