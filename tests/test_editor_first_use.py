"""The editor's first-use rough edges (issue 13, item 8), in headless Debian Chromium.

A workflow opens fitted into view (the default one, and one dropped as a file whose saved
view was made on a larger screen); the progress text has its own room beside the queue
counter and Interrupt button; nodes show their ids; each example is listed once; a
workflow saved to the library keeps its name across a reload.
"""

from __future__ import annotations

import json

import pytest

from tests.editor_support import CHROMIUM, Editor, launch_chromium
from tests.server_support import REPO, ServerThread, make_config

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
if not CHROMIUM.exists():
    pytest.skip("needs /usr/bin/chromium (make test installs it)", allow_module_level=True)

ALL_IN_VIEW = """() => {
    const rect = app.canvas.canvas.getBoundingClientRect();
    return app.graph._nodes.every((n) => {
        const [x0, y0] = app.canvas.ds.convertOffsetToCanvas([n.pos[0], n.pos[1] - 30]);
        const [x1, y1] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
        return x0 >= 0 && y0 >= 0 && x1 <= rect.width && y1 <= rect.height;
    });
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("first_use")
    config = make_config(root, cpu=True, node_packages=["nodes"], web_directory=REPO / "web")
    with ServerThread(config) as running:
        running.root = root
        yield running


def test_first_use(server):
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        # A laptop's window: the examples' saved views were made on larger ones.
        page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
        editor = Editor(page, server.url + "/").open()

        assert editor.js("app.graph._nodes.length") == 7 and editor.js(ALL_IN_VIEW)

        # A file saved with a view far off its nodes opens fitted all the same.
        workflow = json.loads((REPO / "workflows" / "hires_fix.json").read_text())
        workflow["extra"] = {"ds": {"scale": 2.5, "offset": [-3000, -2000]}}
        editor.drop_file("hires_fix.json", json.dumps(workflow).encode(), "application/json")
        page.wait_for_function(f"app.graph._nodes.length === {len(workflow['nodes'])}")
        assert editor.js(ALL_IN_VIEW)

        # Node ids as badges (errors cite them); litegraph leaves badges out below 60% zoom.
        editor.js("() => { app.canvas.ds.scale = 1; app.canvas.draw(true, true); }")
        assert editor.js("""() => app.graph._nodes.every((n) => n.badges.some(
            (b) => (typeof b === "function" ? b() : b).text === `#${n.id}`))""")

        # The progress text never covers the queue counter or the Interrupt button.
        boxes = editor.js("""() => {
            document.getElementById("queue-size").textContent = "12 in queue";
            document.getElementById("progress-text").textContent = "running CLIP Text Encode (Prompt) 19/20";
            const box = (id) => document.getElementById(id).getBoundingClientRect().toJSON();
            return [box("progress-text"), box("queue-size"), box("interrupt-button")];
        }""")
        text = boxes[0]
        for other in boxes[1:]:
            apart = (text["right"] <= other["left"] or other["right"] <= text["left"]
                     or text["bottom"] <= other["top"] or other["bottom"] <= text["top"])
            assert apart, (text, other)

        # Each example once (NAME and NAME_api are one workflow).
        page.locator("#library-examples .library-item").first.wait_for()
        examples = editor.js("[...document.querySelectorAll('#library-examples .library-item')]"
                             ".map((e) => e.dataset.example)")
        assert "txt2img" in examples and "txt2img_api" not in examples
        assert not [name for name in examples if name.endswith("_api") and name[:-4] in examples]
        assert "demo_api" in examples  # an API-format example without an editor twin stays

        # Saved to the library under a name, reloaded: the name stays.
        page.click("#library-save-button")
        name = page.locator(".dialog input")
        name.fill("kept title")
        name.press("Enter")
        page.locator("#library-user .library-item[data-path='kept title.json']").wait_for()
        page.reload()
        editor.open()
        assert editor.js("app.workflowName") == "kept title"
        assert page.locator("#workflow-name").text_content() == "kept title"
        assert editor.js("app.graph._nodes.length") == len(workflow["nodes"])
        assert not editor.errors, editor.errors
        browser.close()
