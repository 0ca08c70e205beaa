"""The browser editor (web/) end to end: headless Debian Chromium driven by Playwright.

One server (real nodes, the committed house model) and one
browser for the module; each test gets a fresh page with empty storage, so it opens
on the default workflow.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import requests
from PIL import Image

from graph import build_registry
from graph.ui_format import ui_to_api
from tests.editor_support import CHROMIUM, Editor, launch_chromium
from tests.server_support import REPO, ServerThread, make_config, wait_history

pytestmark = pytest.mark.slow  # each test drives Chromium

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
if not CHROMIUM.exists():
    pytest.skip("needs /usr/bin/chromium (make test installs it)", allow_module_level=True)

HOUSE_MODEL = "latentgraph-house-v1.safetensors"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("editor")
    (root / "models" / "checkpoints").mkdir(parents=True)
    shutil.copy(REPO / "models" / "checkpoints" / HOUSE_MODEL, root / "models" / "checkpoints" / HOUSE_MODEL)
    config = make_config(root, cpu=True, node_packages=["nodes"], web_directory=REPO / "web")
    with ServerThread(config) as running:
        running.root = root
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def editor(server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 850})
    page = context.new_page()
    opened = Editor(page, server.url + "/").open()
    yield opened
    context.close()
    assert not opened.errors, opened.errors


def test_first_open_shows_the_house_model_workflow_and_queue_makes_an_image(editor, server):
    types = sorted(n["type"] for n in editor.nodes())
    assert types == sorted(["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode", "EmptyLatentImage",
                            "KSampler", "VAEDecode", "SaveImage"])
    assert editor.js("app.graph.getNodeById(4).widgets[0].value") == HOUSE_MODEL
    assert editor.js("app.graph.getNodeById(3).widgets.find(w => w.name === 'steps').value") == 20
    # Fewer steps keep the test quick on a busy CPU; typing them tests the number widget.
    editor.type_into_widget(3, "steps", "3")
    assert editor.js("app.graph.getNodeById(3).widgets.find(w => w.name === 'steps').value") == 3
    editor.js("""window.seen = {progress: [], previews: 0, running: new Set()};
        app.api.addEventListener('progress', e => seen.progress.push(e.detail.value));
        app.api.addEventListener('b_preview', () => seen.previews++);
        app.api.addEventListener('executing', () => seen.running.add(app.execution.runningNodeId));""")

    editor.page.click("#queue-button")
    image = editor.wait_for_image(9)
    assert (image["width"], image["height"]) == (128, 128)
    seen = editor.js("({progress: seen.progress, previews: seen.previews, running: [...seen.running]})")
    assert max(seen["progress"]) == 3 and seen["previews"] > 0
    assert {"3", "9"} <= set(seen["running"])  # the running node was tracked for highlighting
    editor.page.wait_for_selector("#history-list img")
    # From opening to the image, no request failed (no 404/405 from a route ComfyUI answers, no 5xx).
    assert (200, "POST", "api/prompt") in editor.responses
    failed = [r for r in editor.responses if r[0] in (404, 405) or r[0] >= 500]
    assert not failed, failed

    # The PNG carries the editor's workflow, so dropping it restores it (next test).
    filename = image["src"].split("filename=")[1].split("&")[0]
    saved = json.loads(Image.open(server.root / "output" / filename).text["workflow"])
    assert sorted(n["type"] for n in saved["nodes"]) == types


def test_add_and_connect_nodes_through_the_ui_then_queue(editor):
    editor.page.click("#new-button")
    assert editor.nodes() == []
    source = editor.add_by_search("empty image", editor.canvas_point(0.15, 0.2), "EmptyImage")
    target = editor.add_by_search("save image", editor.canvas_point(0.6, 0.2), "SaveImage")
    editor.connect(source, "IMAGE", target, "images")
    assert editor.links() == [[source, 0, target, 0, "IMAGE"]]

    editor.page.click("#queue-button")
    image = editor.wait_for_image(target)
    assert (image["width"], image["height"]) == (512, 512)  # EmptyImage's default size


def test_a_link_between_incompatible_types_is_refused(editor):
    sampler = editor.node_id("KSampler")
    latent = editor.node_id("EmptyLatentImage")
    decode = editor.node_id("VAEDecode")
    links_before = editor.links()
    editor.connect(decode, "IMAGE", sampler, "model")  # IMAGE into MODEL
    assert editor.links() == links_before

    # The same gesture between compatible types does connect (so the refusal is real).
    editor.js(f"app.graph.getNodeById({sampler}).disconnectInput(3)")  # latent_image
    assert not [link for link in editor.links() if link[2] == sampler and link[3] == 3]
    editor.connect(latent, "LATENT", sampler, "latent_image")
    assert [latent, 0, sampler, 3, "LATENT"] in editor.links()


def test_dropping_a_png_made_by_save_image_restores_its_workflow(editor, server):
    workflow = {
        "last_node_id": 2, "last_link_id": 1, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            {"id": 1, "type": "EmptyImage", "title": "Tiny canvas", "pos": [0, 0], "size": [300, 150], "mode": 0,
             "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
             "widgets_values": [64, 48, 1, 255]},
            {"id": 2, "type": "SaveImage", "pos": [400, 0], "size": [300, 300], "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": [],
             "widgets_values": ["dropped"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    }
    response = requests.post(f"{server.url}/prompt", json={"prompt": workflow}, timeout=10)
    assert response.status_code == 200, response.text
    entry = wait_history(server.url, response.json()["prompt_id"])
    (image,) = entry["outputs"]["2"]["images"]
    png = (server.root / "output" / image["subfolder"] / image["filename"]).read_bytes()

    editor.drop_file("made-by-save-image.png", png, "image/png")
    editor.page.wait_for_function("app.graph._nodes.length === 2")
    assert {(n["type"], n["title"]) for n in editor.nodes()} == {("EmptyImage", "Tiny canvas"),
                                                                 ("SaveImage", "Save Image")}
    assert editor.links() == [[1, 0, 2, 0, "IMAGE"]]
    assert editor.js("app.graph.getNodeById(1).widgets.map(w => w.value)") == [64, 48, 1, 255]


def test_a_validation_error_is_shown_on_the_node_and_its_input(editor):
    editor.page.click("#new-button")
    save = editor.add_by_search("save image", editor.canvas_point(0.4, 0.3), "SaveImage")
    editor.page.click("#queue-button")
    panel = editor.page.locator("#error-panel")
    panel.wait_for(state="visible")
    item = panel.locator(f"li.error-item[data-node='{save}']")
    assert item.get_attribute("data-input") == "images"
    assert "Required input is missing" in item.inner_text()
    assert editor.js(f"app.graph.getNodeById({save}).has_errors") is True
    assert editor.js(f"app.errors.forNode({save}).map(e => e.input)") == ["images"]


def test_widget_to_input_and_back_with_undo(editor):
    latent = editor.node_id("EmptyLatentImage")
    editor.page.mouse.click(*editor.title_point(latent), button="right")
    editor.page.locator(".litecontextmenu .litemenu-entry", has_text="Convert width to input").click()
    slot = editor.js(f"app.graph.getNodeById({latent}).inputs.find(s => s.name === 'width')")
    assert "widget" not in slot  # a plain socket now
    assert editor.js(f"app.graph.getNodeById({latent}).widgets.find(w => w.name === 'width').hidden") is True

    editor.page.click("#undo-button")
    editor.page.wait_for_function(f"app.graph.getNodeById({latent}).inputs.find(s => s.name === 'width').widget")
    editor.page.click("#redo-button")
    editor.page.wait_for_function(f"!app.graph.getNodeById({latent}).inputs.find(s => s.name === 'width').widget")

    # Right after an undo or redo (no animation frame in between), the canvas hit-tests the
    # restored nodes, not the replaced ones: a click there must reach the node as it is now.
    assert editor.js("""() => {
        const fresh = () => app.canvas.visible_nodes.length > 0
            && app.canvas.visible_nodes.every((n) => app.graph._nodes.includes(n));
        app.undo.undo();
        const afterUndo = fresh();
        app.undo.redo();
        return afterUndo && fresh();
    }""") is True
    editor.page.mouse.click(*editor.title_point(latent), button="right")
    editor.page.locator(".litecontextmenu .litemenu-entry", has_text="Convert width to widget").click()
    assert editor.js(f"app.graph.getNodeById({latent}).widgets.find(w => w.name === 'width').hidden") is False


def test_save_to_the_library_and_load_it_back(editor, server):
    editor.page.click("#library-save-button")
    name = editor.page.locator(".dialog input")
    name.fill("my txt2img")
    name.press("Enter")
    entry = editor.page.locator("#library-user .library-item[data-path='my txt2img.json'] button.link")
    entry.wait_for()
    saved = json.loads((server.root / "user" / "default" / "workflows" / "my txt2img.json").read_text())
    assert len(saved["nodes"]) == 7

    editor.page.click("#new-button")
    entry.click()
    editor.page.wait_for_function("app.graph._nodes.length === 7")
    assert editor.js("app.workflowName") == "my txt2img"


def test_the_editors_prompt_is_the_servers_conversion_of_its_workflow(editor, server):
    """The UI document the editor saves converts (graph/ui_format.py) to the prompt it sends."""
    from graph.ui_format import ui_to_api

    editor.page.click("#new-button")
    source = editor.add_by_search("empty image", editor.canvas_point(0.1, 0.2), "EmptyImage")
    invert = editor.add_by_search("invert image", editor.canvas_point(0.35, 0.2), "ImageInvert")
    scale = editor.add_by_search("image scale by", editor.canvas_point(0.35, 0.6), "ImageScaleBy")
    save = editor.add_by_search("save image", editor.canvas_point(0.6, 0.2), "SaveImage")
    editor.add_by_search("note", editor.canvas_point(0.6, 0.7), "Note")
    editor.connect(source, "IMAGE", invert, "image")
    editor.connect(invert, "IMAGE", scale, "image")
    editor.connect(scale, "IMAGE", save, "images")
    editor.page.mouse.click(*editor.title_point(invert))
    editor.page.keyboard.press("Control+b")  # bypassed: its input passes through
    editor.page.mouse.click(*editor.title_point(scale), button="right")
    editor.page.locator(".litecontextmenu .litemenu-entry", has_text="Convert scale_by to input").click()

    built = json.loads(editor.js("JSON.stringify(app.buildPrompt())"))
    assert built["output"][str(save)]["inputs"]["images"] == [str(scale), 0]
    assert built["output"][str(scale)]["inputs"]["image"] == [str(source), 0]
    assert str(invert) not in built["output"]
    converted = ui_to_api(built["workflow"], server.handlers.registry)
    strip = {key: {"class_type": node["class_type"], "inputs": node["inputs"]} for key, node in built["output"].items()}
    assert {key: {"class_type": n["class_type"], "inputs": n["inputs"]} for key, n in converted.items()} == strip


def test_the_editor_opens_on_a_token_protected_server_from_its_token_link(browser, tmp_path):
    config = make_config(tmp_path, cpu=True, node_packages=["nodes"], web_directory=REPO / "web",
                         auth_token="s3cret")
    with ServerThread(config) as locked:
        context = browser.new_context()
        page = context.new_page()
        try:
            assert page.goto(locked.url + "/").status == 401
            opened = Editor(page, locked.url + "/?token=s3cret").open()  # scripts, /object_info, websocket
            assert len(opened.nodes()) == 7 and not opened.errors
            opened.page.wait_for_function("app.api.socket && app.api.socket.readyState === 1")
        finally:
            context.close()


# -- frontend-only nodes: Reroute and PrimitiveNode ------------------------------------------

def comfy_workflow_with_reroute_and_primitive() -> dict:
    """workflows/txt2img.json as ComfyUI saves it after two edits: the MODEL link runs through
    two chained Reroutes, and a PrimitiveNode (1234, fixed) drives KSampler's seed."""
    doc = copy.deepcopy(json.loads((REPO / "workflows" / "txt2img.json").read_text()))
    nodes = {n["id"]: n for n in doc["nodes"]}
    sampler, loader = nodes[3], nodes[4]
    sampler["widgets_values"][2] = 3  # steps: quick on a busy CPU
    doc["links"] = [link for link in doc["links"] if link[0] != 1]
    doc["links"] += [[10, 4, 0, 20, 0, "MODEL"], [11, 20, 0, 21, 0, "MODEL"], [12, 21, 0, 3, 0, "MODEL"],
                     [13, 22, 0, 3, 4, "INT"]]
    loader["outputs"][0]["links"] = [10]
    sampler["inputs"][0]["link"] = 12
    sampler["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 13})
    doc["nodes"] += [
        {"id": 20, "type": "Reroute", "pos": [300, 40], "size": [75, 26], "mode": 0,
         "inputs": [{"name": "", "type": "*", "link": 10}],
         "outputs": [{"name": "", "type": "MODEL", "links": [11]}], "properties": {"showOutputText": False}},
        {"id": 21, "type": "Reroute", "pos": [500, 40], "size": [75, 26], "mode": 0,
         "inputs": [{"name": "", "type": "*", "link": 11}],
         "outputs": [{"name": "", "type": "MODEL", "links": [12]}], "properties": {"showOutputText": False}},
        {"id": 22, "type": "PrimitiveNode", "pos": [300, 400], "size": [210, 82], "mode": 0,
         "outputs": [{"name": "INT", "type": "INT", "links": [13], "widget": {"name": "seed"}}],
         "widgets_values": [1234, "fixed"], "properties": {"Run widget replace on values": False}},
    ]
    doc["last_node_id"], doc["last_link_id"] = 22, 13
    return doc


def test_a_comfyui_workflow_with_reroutes_and_a_primitive_opens_converts_and_runs(editor):
    doc = comfy_workflow_with_reroute_and_primitive()
    editor.js("(doc) => app.loadWorkflow(doc)", doc)
    assert editor.js("app.graph.getNodeById(20).outputs[0].type") == "MODEL"
    assert editor.js("app.graph.getNodeById(22).widgets.map(w => w.value)") == [1234, "fixed"]
    assert editor.js("app.graph.getNodeById(3).widgets.find(w => w.name === 'seed').value") == 1234
    prompt = editor.js("app.buildPrompt().output")
    expected = ui_to_api(doc, build_registry("nodes", None, disable_plugins=True))
    assert set(prompt) == set(expected) == {"3", "4", "5", "6", "7", "8", "9"}  # no frontend nodes
    assert prompt["3"]["inputs"]["model"] == ["4", 0]
    assert prompt["3"]["inputs"]["seed"] == 1234
    for node_id, node in expected.items():
        assert prompt[node_id]["inputs"] == node["inputs"], node_id

    # The primitive's value is what runs: change it, and the sampler's seed follows.
    editor.js("""(() => { const w = app.graph.getNodeById(22).widgets[0]; w.value = 77; w.callback(77); })()""")
    assert editor.js("app.graph.getNodeById(3).widgets.find(w => w.name === 'seed').value") == 77
    assert editor.js("app.buildPrompt().output")["3"]["inputs"]["seed"] == 77

    editor.page.click("#queue-button")
    image = editor.wait_for_image(9)
    assert (image["width"], image["height"]) == (128, 128)
    saved = editor.js("app.graph.serialize()")
    assert {n["type"] for n in saved["nodes"]} >= {"Reroute", "PrimitiveNode"}  # kept in the workflow


def test_a_reroute_takes_the_type_of_its_source(editor):
    loader, sampler = editor.node_id("CheckpointLoaderSimple"), editor.node_id("KSampler")
    decode = editor.node_id("VAEDecode")
    reroute = editor.add_by_search("reroute", editor.canvas_point(0.35, 0.08), "Reroute")
    assert editor.js(f"app.graph.getNodeById({reroute}).outputs[0].type") == "*"
    editor.js(f"app.graph.getNodeById({loader}).connect(0, app.graph.getNodeById({reroute}), 0)")
    assert editor.js(f"app.graph.getNodeById({reroute}).outputs[0].type") == "MODEL"
    # MODEL does not go into a VAE input, through a reroute either; into KSampler's model it does.
    vae_slot = editor.js(f"app.graph.getNodeById({decode}).inputs.findIndex(s => s.name === 'vae')")
    refused = editor.js(f"app.graph.getNodeById({reroute}).connect(0, app.graph.getNodeById({decode}), {vae_slot})")
    assert not refused
    assert editor.js(f"app.graph.getNodeById({reroute}).connect(0, app.graph.getNodeById({sampler}), 0)")
    assert editor.js("app.buildPrompt().output")[str(sampler)]["inputs"]["model"] == [str(loader), 0]


def test_a_new_primitive_takes_the_widget_it_is_linked_to(editor):
    sampler = editor.node_id("KSampler")
    primitive = editor.add_by_search("primitive", editor.canvas_point(0.35, 0.85), "PrimitiveNode")
    assert editor.js(f"app.graph.getNodeById({primitive}).widgets?.length ?? 0") == 0
    steps_slot = editor.js(f"app.graph.getNodeById({sampler}).inputs.findIndex(s => s.widget?.name === 'steps')")
    assert editor.js(f"!!app.graph.getNodeById({primitive}).connect(0, app.graph.getNodeById({sampler}), {steps_slot})")
    node = editor.js(f"""(() => {{ const n = app.graph.getNodeById({primitive});
        return {{type: n.outputs[0].type, widgets: n.widgets.map(w => [w.name, w.value])}}; }})()""")
    assert node == {"type": "INT", "widgets": [["steps", 20]]}  # the sampler's own value
    editor.js(f"(() => {{ const w = app.graph.getNodeById({primitive}).widgets[0]; w.value = 4; w.callback(4); }})()")
    assert editor.js("app.buildPrompt().output")[str(sampler)]["inputs"]["steps"] == 4
    editor.js(f"app.graph.getNodeById({sampler}).disconnectInput({steps_slot})")
    assert editor.js(f"app.graph.getNodeById({primitive}).outputs[0].type") == "*"


# -- subgraphs ---------------------------------------------------------------------------------

def test_a_subgraph_opens_closes_converts_like_the_server_and_runs(editor, server):
    """Sampler, latent and positive prompt packed into a subgraph (as "Convert to Subgraph"
    does): the prompt names the inner nodes "instance:node", the server's conversion of the
    saved workflow gives the same prompt, it survives a save and reload, and it runs."""
    instance = editor.js("""(() => {
        const g = app.graph;
        g.convertToSubgraph(new Set([3, 5, 6].map((id) => g.getNodeById(id))));
        const node = g._nodes.find((n) => n.isSubgraphNode());
        node.subgraph.getNodeById(3).widgets.find((w) => w.name === 'steps').value = 3;
        return node.id;
    })()""")
    assert sorted(n["type"] for n in editor.nodes() if n["id"] != instance) == sorted(
        ["CheckpointLoaderSimple", "CLIPTextEncode", "VAEDecode", "SaveImage"])
    assert editor.js(f"app.graph.getNodeById({instance}).title") == "New Subgraph"  # litegraph's default name

    middle = editor.js(f"""(() => {{ const n = app.graph.getNodeById({instance});
        return app.toScreen([n.pos[0] + n.size[0] / 2, n.pos[1] + n.size[1] / 2]); }})()""")
    for attempt in range(3):  # litegraph times the double-click itself; a starved browser may miss it
        editor.page.mouse.dblclick(*middle)
        try:
            editor.page.wait_for_selector("#subgraph-bar", state="visible", timeout=10000)
            break
        except sync_api.TimeoutError:
            if attempt == 2:
                raise
    assert editor.js("app.viewedGraph !== app.graph && app.viewedGraph._nodes.length") == 3
    editor.page.click("#subgraph-exit-button")
    editor.page.wait_for_selector("#subgraph-bar", state="hidden")
    assert editor.js("app.viewedGraph === app.graph") is True

    built = json.loads(editor.js("JSON.stringify(app.buildPrompt())"))
    prompt = built["output"]
    inner = {f"{instance}:3", f"{instance}:5", f"{instance}:6"}
    assert set(prompt) == {"4", "7", "8", "9"} | inner
    assert prompt["8"]["inputs"]["samples"] == [f"{instance}:3", 0]
    assert prompt[f"{instance}:3"]["inputs"]["model"] == ["4", 0]
    assert prompt[f"{instance}:3"]["inputs"]["positive"] == [f"{instance}:6", 0]
    assert prompt[f"{instance}:6"]["inputs"]["clip"] == ["4", 1]
    converted = ui_to_api(built["workflow"], server.handlers.registry)
    assert {k: n["inputs"] for k, n in converted.items()} == {k: n["inputs"] for k, n in prompt.items()}

    editor.js("(doc) => app.loadWorkflow(doc)", built["workflow"])  # a saved file opened again
    assert json.loads(editor.js("JSON.stringify(app.buildPrompt().output)")) == prompt
    assert editor.js(f"app.graph.getNodeById({instance}).title") == "New Subgraph"
    editor.page.click("#queue-button")
    image = editor.wait_for_image(9)
    assert (image["width"], image["height"]) == (128, 128)


def test_a_widget_shown_on_a_subgraph_node_edits_the_inner_widget(editor, server):
    """KSampler's seed fed from outside (a Primitive), KSampler packed into a subgraph, then
    the outside link removed: the subgraph node shows the seed widget. Editing it changes
    the inner KSampler's seed, which is what the editor sends and the server reads."""
    instance = editor.js("""(() => {
        const g = app.graph;
        const primitive = app.addNode('PrimitiveNode', [600, 500]);
        const sampler = g.getNodeById(3);
        primitive.connect(0, sampler, sampler.inputs.findIndex((s) => s.widget?.name === 'seed'));
        g.convertToSubgraph(new Set([sampler]));
        const node = g._nodes.find((n) => n.isSubgraphNode());
        node.disconnectInput(node.inputs.findIndex((s) => s.name === 'seed'));
        g.remove(primitive);
        return node.id;
    })()""")
    assert editor.js(f"app.graph.getNodeById({instance}).widgets.map((w) => [w.name, w.value])") == [["seed", 42]]
    editor.js(f"""(() => {{ const node = app.graph.getNodeById({instance});
        node.widgets[0].setValue(7, {{ e: null, node, canvas: app.canvas }}); }})()""")
    assert editor.js(f"""app.graph.getNodeById({instance}).subgraph.getNodeById(3)
        .widgets.find((w) => w.name === 'seed').value""") == 7
    built = json.loads(editor.js("JSON.stringify(app.buildPrompt())"))
    assert built["output"][f"{instance}:3"]["inputs"]["seed"] == 7
    converted = ui_to_api(built["workflow"], server.handlers.registry)
    assert converted[f"{instance}:3"]["inputs"]["seed"] == 7


def test_an_error_inside_a_subgraph_marks_its_subgraph_node(editor):
    instance = editor.js("""(() => {
        const g = app.graph;
        g.convertToSubgraph(new Set([3, 5].map((id) => g.getNodeById(id))));
        const node = g._nodes.find((n) => n.isSubgraphNode());
        const sampler = node.subgraph.getNodeById(3);
        sampler.disconnectInput(sampler.inputs.findIndex((s) => s.name === 'latent_image'));
        return node.id;
    })()""")
    editor.page.click("#queue-button")
    item = editor.page.locator(f"#error-panel li.error-item[data-node='{instance}:3']")
    item.wait_for()
    assert "Required input is missing" in item.inner_text()
    assert editor.js(f"app.graph.getNodeById({instance}).has_errors") is True
    assert editor.js(f"app.errors.forNode({instance}).map((e) => e.message)") == ["Required input is missing"]


@pytest.mark.parametrize("mode", [2, 4])
def test_a_muted_or_bypassed_subgraph_node_takes_its_inner_nodes_along(editor, server, mode):
    """Muted (2): nothing inside runs, and what it fed loses that input. Bypassed (4): its
    IMAGE input passes through to its IMAGE output. As the server converts the same file."""
    editor.page.click("#new-button")
    ids = editor.js("""(() => {
        const add = (type, x) => { const n = app.addNode(type, [x, 100]); return n; };
        const source = add('EmptyImage', 0), invert = add('ImageInvert', 300), save = add('SaveImage', 600);
        source.connect(0, invert, 0);
        invert.connect(0, save, 0);
        app.graph.convertToSubgraph(new Set([invert]));
        return {source: source.id, save: save.id, instance: app.graph._nodes.find((n) => n.isSubgraphNode()).id};
    })()""")
    editor.js(f"app.graph.getNodeById({ids['instance']}).mode = {mode}")
    built = json.loads(editor.js("JSON.stringify(app.buildPrompt())"))
    assert set(built["output"]) == {str(ids["source"]), str(ids["save"])}  # nothing from inside
    images = built["output"][str(ids["save"])]["inputs"].get("images")
    assert images == ([str(ids["source"]), 0] if mode == 4 else None)
    converted = ui_to_api(built["workflow"], server.handlers.registry)
    assert {k: n["inputs"] for k, n in converted.items()} == {k: n["inputs"] for k, n in built["output"].items()}


def test_interrupt_names_the_prompt_this_editor_runs(editor):
    """With several Ray workers an id-less /interrupt stops every prompt; the editor names its
    own running prompt, and sends no id only when it follows none (ComfyUI's global interrupt)."""
    bodies = []
    editor.page.on("request", lambda r: bodies.append(r.post_data_json) if r.url.endswith("/interrupt") else None)
    editor.js("app.execution.promptId = 'p-running'; app.execution.finished = false")
    editor.js("app.interrupt()")
    editor.js("app.execution.finished = true")
    editor.js("app.interrupt()")
    editor.page.wait_for_timeout(300)
    assert bodies == [{"prompt_id": "p-running"}, {}]
