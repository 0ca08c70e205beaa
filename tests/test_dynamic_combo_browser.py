"""Our editor (web/) with DynamicCombo nodes, in headless Debian Chromium: it shows only the
widgets of each combo's chosen option, as ComfyUI's frontend does, reads a workflow saved by
the official frontend (tests/data/frontend_oracle/dynamic_combos.json) and sends the same
prompt the official frontend sent for it.
"""

from __future__ import annotations

import json

import pytest

from tests.editor_support import CHROMIUM, Editor, launch_chromium
from tests.server_support import REPO, ServerThread, make_config

pytestmark = pytest.mark.slow  # drives Chromium

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
if not CHROMIUM.exists():
    pytest.skip("needs /usr/bin/chromium (make test installs it)", allow_module_level=True)

RECORD = json.loads((REPO / "tests" / "data" / "frontend_oracle" / "dynamic_combos.json").read_text())
SAVED = (REPO / RECORD["workflow"]).read_bytes()
WIDGETS = "(id) => app.graph.getNodeById(id).widgets.filter(w => !w.hidden).map(w => [w.name, w.value])"


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    root = tmp_path_factory.mktemp("dynamic_combo_editor")
    config = make_config(root, cpu=True, node_packages=["nodes"], web_directory=REPO / "web")
    with ServerThread(config) as server, sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_context(viewport={"width": 1400, "height": 850}).new_page()
        opened = Editor(page, server.url + "/").open()
        yield opened
        browser.close()
        assert not opened.errors, opened.errors


def pick(editor: Editor, node_id: int, widget: str, choice: str) -> None:
    """Opens a combo widget's menu with the mouse and clicks one of its entries."""
    editor.page.mouse.click(*editor.widget_point(node_id, widget))
    editor.page.locator(".litecontextmenu .litemenu-entry", has_text=choice).first.click()


def test_a_workflow_saved_by_the_official_frontend_shows_the_chosen_options_and_sends_its_prompt(editor):
    editor.drop_file("dynamic_combos.json", SAVED, "application/json")
    editor.page.wait_for_function("app.graph.getNodeById(6) !== null")
    assert editor.js(WIDGETS, 4) == [["resize_type", "scale by multiplier"], ["resize_type.multiplier", 2.5],
                                     ["scale_method", "bicubic"]]
    assert editor.js(WIDGETS, 3) == [["resize_type", "match size"], ["resize_type.crop", "disabled"],
                                     ["scale_method", "area"]]
    assert [name for name, _ in editor.js(WIDGETS, 6)] == [
        "filename_prefix", "format", "format.bit_depth", "format.input_color_space", "format.crf",
        "format.save_mode", "format.save_mode.fps", "format.save_mode.loop_count"]
    sent = json.loads(editor.js("JSON.stringify(app.buildPrompt().output)"))
    assert {k: v["inputs"] for k, v in sent.items()} == {k: v["inputs"] for k, v in RECORD["prompt"].items()}

    # Choosing another option with the mouse swaps the widgets (and the sockets) ...
    pick(editor, 4, "resize_type", "scale dimensions")
    assert editor.js(WIDGETS, 4) == [["resize_type", "scale dimensions"], ["resize_type.width", 512],
                                     ["resize_type.height", 512], ["resize_type.crop", "center"],
                                     ["scale_method", "bicubic"]]
    assert "resize_type.multiplier" not in editor.js("app.graph.getNodeById(4).inputs.map(s => s.name)")
    # ... and coming back restores the value the option had.
    pick(editor, 4, "resize_type", "scale by multiplier")
    assert editor.js(WIDGETS, 4)[1] == ["resize_type.multiplier", 2.5]
    pick(editor, 6, "format.save_mode", "still images")
    assert [name for name, _ in editor.js(WIDGETS, 6)][-1] == "format.save_mode"
    pick(editor, 6, "format", "exr")  # exr's own bit depths and default
    assert editor.js(WIDGETS, 6)[2:4] == [["format.bit_depth", "32-bit float"], ["format.input_color_space", "sRGB"]]

    # Saved as ComfyUI saves it: only the shown widgets' values, after their combo's.
    saved = {node["id"]: node["widgets_values"] for node in editor.workflow()["nodes"]}
    assert saved[4] == ["scale by multiplier", 2.5, "bicubic"]
    assert saved[6] == ["anim", "exr", "32-bit float", "sRGB"]
