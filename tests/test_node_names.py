"""ComfyUI's display names for the nodes we share with it, and the editor's node search.

ComfyUI users know "KSampler", "Load Checkpoint", "CLIP Text Encode (Prompt)"; /object_info
serves those names (nodes/comfy_names.py), and the editor's search (web/js/palette.js) finds a
node by class name, display name or an everyday word such as "prompt" or "upscale".
"""

from __future__ import annotations

import pytest

from graph import Input, Node, NodeRegistry, Output, build_registry
from nodes.comfy_names import COMFYUI_DISPLAY_NAMES, SEARCH_ALIASES
from tests.server_support import REPO, ServerThread, make_config

# Built-in nodes that ComfyUI does not have (none today): they keep their own names.
LATENTGRAPH_ONLY: set[str] = set()


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    return build_registry("nodes", None)


def test_the_names_comfyui_users_know(registry):
    info = registry.object_info()
    assert {name: info[name]["display_name"] for name in (
        "KSampler", "KSamplerAdvanced", "CheckpointLoaderSimple", "VAELoader", "CLIPTextEncode", "LoraLoader",
        "EmptyLatentImage", "VAEDecode", "SaveImage", "ImageScale", "LatentUpscale", "UpscaleModelLoader")} == {
        "KSampler": "KSampler", "KSamplerAdvanced": "KSampler (Advanced)", "CheckpointLoaderSimple": "Load Checkpoint",
        "VAELoader": "Load VAE", "CLIPTextEncode": "CLIP Text Encode (Prompt)",
        "LoraLoader": "Load LoRA (Model and CLIP)", "EmptyLatentImage": "Empty Latent Image",
        "VAEDecode": "VAE Decode", "SaveImage": "Save Image", "ImageScale": "Upscale Image",
        "LatentUpscale": "Upscale Latent", "UpscaleModelLoader": "Load Upscale Model"}


def test_every_built_in_node_has_comfyuis_display_name(registry):
    for name, definition in registry.definitions.items():
        if name in LATENTGRAPH_ONLY:
            continue
        assert name in COMFYUI_DISPLAY_NAMES, f"{name}: not a ComfyUI class? add it to LATENTGRAPH_ONLY"
        assert definition.display_name == COMFYUI_DISPLAY_NAMES[name], name


def test_search_aliases_name_real_nodes_and_reach_object_info(registry):
    assert set(SEARCH_ALIASES) <= set(COMFYUI_DISPLAY_NAMES)
    assert "prompt" in registry.object_info()["CLIPTextEncode"]["search_aliases"]
    assert "search_aliases" not in registry.object_info()["LatentFlip"]  # only where there are some


class KSampler(Node):
    """A plugin's own class under a ComfyUI name."""

    seed = Input("INT", default=0)
    outputs = (Output("INT"),)


class Renamed(Node):
    node_name = "VAELoader"
    display_name = "My VAE Loader"
    search_aliases = ("autoencoder",)
    outputs = (Output("VAE"),)


def test_a_plugin_class_with_a_comfyui_name_gets_it_unless_it_names_itself():
    # The names a registry knows come from the node packages it loaded (nodes/__init__.py).
    registry = NodeRegistry(known_names=dict(COMFYUI_DISPLAY_NAMES), known_aliases=dict(SEARCH_ALIASES))
    registry.register(KSampler)
    registry.register(Renamed)
    assert registry.get("KSampler").display_name == "KSampler"
    assert registry.get("KSampler").search_aliases == SEARCH_ALIASES["KSampler"]
    assert registry.get("VAELoader").display_name == "My VAE Loader"
    assert registry.get("VAELoader").search_aliases == ("autoencoder",)
    loaded = NodeRegistry()
    loaded.load_package("nodes")
    assert loaded.known_names == COMFYUI_DISPLAY_NAMES and loaded.known_aliases == SEARCH_ALIASES


def test_the_editor_search_finds_nodes_by_class_display_name_and_common_words(tmp_path):
    """web/js/palette.js's searchNodes, run in Chromium against the server's /object_info."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    from tests.editor_support import CHROMIUM, launch_chromium

    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium (make test installs it)")
    config = make_config(tmp_path, node_packages=["nodes"], web_directory=REPO / "web")
    with ServerThread(config) as server, sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.goto(server.url + "/")
        found = page.evaluate("""async (queries) => {
            const { searchNodes } = await import('/js/palette.js');
            const defs = await (await fetch('/object_info')).json();
            return Object.fromEntries(queries.map(q => [q, searchNodes(defs, q).map(d => d.name)]));
        }""", ["KSampler", "load checkpoint", "prompt", "sampler", "upscale", "clip text encode (prompt)",
               "load vae", "CheckpointLoaderSimple"])
        browser.close()
    assert found["KSampler"][0] == "KSampler"
    assert found["load checkpoint"][0] == "CheckpointLoaderSimple"
    assert found["CheckpointLoaderSimple"][0] == "CheckpointLoaderSimple"
    assert found["clip text encode (prompt)"][0] == "CLIPTextEncode"
    assert found["load vae"][0] == "VAELoader"
    assert {"CLIPTextEncode", "CLIPTextEncodeSDXL"} <= set(found["prompt"][:5])
    assert {"KSampler", "KSamplerAdvanced"} <= set(found["sampler"][:5])
    assert {"ImageScale", "ImageScaleBy", "LatentUpscale", "ImageUpscaleWithModel", "UpscaleModelLoader"} <= set(
        found["upscale"])
