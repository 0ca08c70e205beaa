"""Takes the README's screenshot of the editor: docs/editor.png.

Starts ``server.py`` on a free port (its queue, user files and outputs in a temporary
folder; models from ``--models-directory``), opens the editor in headless Debian Chromium,
which shows the default txt2img workflow, queues it once (unless ``--no-queue``) so the
Save Image node shows a picture, and saves a screenshot. ``make screenshot`` runs it.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.editor_support import Editor, launch_chromium  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(work: Path, models: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, str(REPO / "server.py"), "--port", str(port), "--models-directory", str(models),
               "--input-directory", str(work / "input"), "--output-directory", str(work / "output"),
               "--temp-directory", str(work / "temp"), "--database", str(work / "queue.sqlite3"),
               "--user-directory", str(work / "user"), "--web-directory", str(REPO / "web"),
               "--examples-directory", str(REPO / "workflows"), "--disable-all-custom-nodes"]
    process = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/prompt", timeout=1)
            return process
        except requests.ConnectionError:
            if process.poll() is not None:
                raise SystemExit("the server exited") from None
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "editor.png")
    parser.add_argument("--models-directory", type=Path, default=REPO / "models")
    parser.add_argument("--no-queue", action="store_true", help="do not run the workflow before the screenshot")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=810)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as temporary:
        port = free_port()
        server = start_server(Path(temporary), args.models_directory.resolve(), port)
        try:
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                page = browser.new_page(viewport={"width": args.width, "height": args.height})
                editor = Editor(page, f"http://127.0.0.1:{port}/").open()
                if not args.no_queue:
                    save = editor.node_id("SaveImage")
                    page.click("#queue-button")
                    editor.wait_for_image(save, timeout=600000)
                    page.wait_for_timeout(500)
                args.output.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.output))
                browser.close()
        finally:
            server.terminate()
            server.wait(30)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
