"""Driving the browser editor (web/) with Playwright and Debian's Chromium, for tests and tools.

Only the mouse and keyboard change the graph in tests; ``window.app`` is read to find
where things are on screen (slot positions) and to check what happened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = Path("/usr/bin/chromium")
READY = "document.body.dataset.ready === 'true'"


def launch_chromium(playwright: Any) -> Any:
    """Headless Debian Chromium (never a downloaded browser)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])


class Editor:
    """One editor page: helpers to find nodes and slots and to act with the mouse."""

    def __init__(self, page: Any, url: str) -> None:
        self.page = page
        self.url = url
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        # (status, method, path) of every response the page got: tests check none failed
        self.responses: list[tuple[int, str, str]] = []
        page.on("response", lambda r: self.responses.append(
            (r.status, r.request.method, r.url.split("/", 3)[-1] if "://" in r.url else r.url)))

    def open(self) -> Editor:
        self.page.goto(self.url)
        self.page.wait_for_function(READY, timeout=120000)
        return self

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def nodes(self) -> list[dict[str, Any]]:
        """[{id, type, title}] of the graph's nodes."""
        return self.js("app.graph._nodes.map(n => ({id: n.id, type: n.type, title: n.title}))")

    def node_id(self, node_type: str) -> int:
        (found,) = [n["id"] for n in self.nodes() if n["type"] == node_type]
        return found

    def links(self) -> list[list[Any]]:
        """[origin_id, origin_slot, target_id, target_slot, type] per link."""
        return self.js("[...app.graph._links.values()].map(l => [l.origin_id, l.origin_slot, l.target_id, "
                       "l.target_slot, l.type])")

    def slot(self, node_id: int, name: str, *, output: bool) -> tuple[float, float]:
        """Page coordinates of a node's input or output slot, by name."""
        return tuple(self.js("""([id, name, output]) => {
            const node = app.graph.getNodeById(id);
            const slots = output ? node.outputs : node.inputs;
            const index = slots.findIndex(s => s.name === name);
            if (index < 0) throw new Error(`no slot ${name}`);
            return app.toScreen(output ? node.getOutputPos(index) : node.getInputPos(index));
        }""", [node_id, name, output]))

    def title_point(self, node_id: int) -> tuple[float, float]:
        return tuple(self.js("""(id) => {
            const node = app.graph.getNodeById(id);
            return app.toScreen([node.pos[0] + node.size[0] / 2, node.pos[1] - 12]);
        }""", node_id))

    def widget_point(self, node_id: int, name: str) -> tuple[float, float]:
        """Page coordinates of the middle of a node's widget."""
        return tuple(self.js("""([id, name]) => {
            const node = app.graph.getNodeById(id);
            const widget = node.widgets.find(w => w.name === name);
            return app.toScreen([node.pos[0] + node.size[0] / 2, node.pos[1] + widget.y + 10]);
        }""", [node_id, name]))

    def type_into_widget(self, node_id: int, name: str, value: str) -> None:
        """Clicks a number or text widget and types a value into the dialog it opens."""
        self.page.mouse.click(*self.widget_point(node_id, name))
        field = self.page.locator(".graphdialog .value")
        field.fill(value)
        field.press("Enter")

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        mouse = self.page.mouse
        mouse.move(*start)
        mouse.down()
        mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=4)
        mouse.move(*end, steps=4)
        mouse.up()

    def connect(self, source: int, output: str, target: int, input_name: str) -> None:
        self.drag(self.slot(source, output, output=True), self.slot(target, input_name, output=False))

    def canvas_point(self, fx: float, fy: float) -> tuple[float, float]:
        """A point of the canvas, as fractions of its width and height."""
        box = self.page.locator("#graph-canvas").bounding_box()
        return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy

    def add_by_search(self, query: str, at: tuple[float, float], expect_type: str) -> int:
        """Double-clicks the canvas, types in the search box and picks the first result."""
        before = {n["id"] for n in self.nodes()}
        box = self.page.locator(".node-search input")
        # litegraph times the two clicks itself; on a starved machine the browser may see
        # them too far apart, so a double-click that opened nothing is tried again.
        for attempt in range(3):
            self.page.mouse.dblclick(*at)
            try:
                box.wait_for(timeout=10000)
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise
        box.fill(query)
        first = self.page.locator(".node-search-results li").first
        assert first.get_attribute("data-type") == expect_type
        box.press("Enter")
        (added,) = [n for n in self.nodes() if n["id"] not in before]
        assert added["type"] == expect_type
        return added["id"]

    def wait_for_image(self, node_id: int, timeout: float = 600000) -> dict[str, Any]:
        """Waits until the node shows a loaded image; returns {src, width, height}."""
        self.page.wait_for_function("""(id) => {
            const imgs = app.graph.getNodeById(id)?.imgs;
            return imgs && imgs.length && imgs[0].complete && imgs[0].naturalWidth > 0;
        }""", arg=node_id, timeout=timeout)
        return self.js("""(id) => { const img = app.graph.getNodeById(id).imgs[0];
            return {src: img.src, width: img.naturalWidth, height: img.naturalHeight}; }""", node_id)

    def drop_file(self, name: str, data: bytes, mime: str) -> None:
        """Drops a file on the canvas, as a drag and drop from the desktop would."""
        self.js("""([name, bytes, mime]) => {
            const file = new File([new Uint8Array(bytes)], name, {type: mime});
            const transfer = new DataTransfer();
            transfer.items.add(file);
            const canvas = document.querySelector("#graph-canvas");
            const box = canvas.getBoundingClientRect();
            canvas.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true,
                clientX: box.left + box.width / 2, clientY: box.top + box.height / 2}));
        }""", [name, list(data), mime])

    def workflow(self) -> dict[str, Any]:
        return json.loads(self.js("JSON.stringify(app.buildPrompt().workflow)"))
