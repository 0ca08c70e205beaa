"""The editor's workflow library: /userdata (the user's files) and /workflow_templates (examples)."""

from __future__ import annotations

import json
import os

import pytest
import requests

from tests.server_support import REPO, ServerThread, make_config


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("userdata")
    with ServerThread(make_config(root)) as running:
        running.root = root
        yield running


def test_save_list_load_rename_and_delete_a_workflow(server):
    url = f"{server.url}/userdata"
    document = {"nodes": [], "links": [], "version": 0.4}
    saved = requests.post(f"{url}/workflows%2Fmine.json", data=json.dumps(document), timeout=10)
    assert saved.status_code == 200 and saved.json() == "workflows/mine.json"
    assert (server.root / "user" / "default" / "workflows" / "mine.json").is_file()

    assert requests.get(url, params={"dir": "workflows"}, timeout=10).json() == ["mine.json"]
    info = requests.get(url, params={"dir": "workflows", "full_info": "true"}, timeout=10).json()
    assert info[0]["path"] == "mine.json" and info[0]["size"] == len(json.dumps(document))

    loaded = requests.get(f"{server.url}/api/userdata/workflows%2Fmine.json", timeout=10)
    assert loaded.json() == document
    assert loaded.headers["X-Content-Type-Options"] == "nosniff"
    assert loaded.headers["Content-Disposition"] == "attachment"

    refused = requests.post(f"{url}/workflows%2Fmine.json", params={"overwrite": "false"}, data=b"{}", timeout=10)
    assert refused.status_code == 409
    assert requests.get(f"{url}/workflows%2Fmine.json", timeout=10).json() == document

    moved = requests.post(f"{url}/workflows%2Fmine.json/move/workflows%2Fsub%2Fother.json", timeout=10)
    assert moved.json() == "workflows/sub/other.json"
    assert requests.get(url, params={"dir": "workflows", "recurse": "true"}, timeout=10).json() == [
        "sub/other.json"]
    assert requests.get(url, params={"dir": "workflows", "recurse": "true", "split": "true"},
                        timeout=10).json() == [["sub/other.json", "sub", "other.json"]]
    assert requests.delete(f"{url}/workflows%2Fsub%2Fother.json", timeout=10).status_code == 204
    assert requests.get(f"{url}/workflows%2Fsub%2Fother.json", timeout=10).status_code == 404


@pytest.mark.parametrize("name", ["..%2Fescape.json", "workflows%2F..%2F..%2Fescape.json",
                                  "%2Fetc%2Fpasswd", "a%5Cb.json", "bad%00.json"])
def test_paths_cannot_leave_the_user_folder(server, name):
    url = f"{server.url}/userdata/{name}"
    assert requests.post(url, data=b"{}", timeout=10).status_code in (400, 403, 404)
    assert requests.get(url, timeout=10).status_code in (400, 403, 404)
    assert not (server.root / "user" / "escape.json").exists()
    assert not (server.root / "escape.json").exists()


def test_a_symlink_in_the_user_folder_does_not_lead_out(server, tmp_path):
    outside = tmp_path / "secret.json"
    outside.write_text('{"secret": 1}')
    folder = server.root / "user" / "default"
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(tmp_path, folder / "link")
    assert requests.get(f"{server.url}/userdata/link%2Fsecret.json", timeout=10).status_code == 403
    assert requests.post(f"{server.url}/userdata/link%2Fnew.json", data=b"{}", timeout=10).status_code == 403
    assert not (tmp_path / "new.json").exists()


def test_listing_needs_a_folder_and_a_cross_origin_write_is_refused(server):
    assert requests.get(f"{server.url}/userdata", timeout=10).status_code == 400
    assert requests.get(f"{server.url}/userdata", params={"dir": "nothing"}, timeout=10).status_code == 404
    response = requests.post(f"{server.url}/userdata/workflows%2Fx.json", data=b"{}",
                             headers={"Origin": "http://evil.example"}, timeout=10)
    assert response.status_code == 403


def test_examples_are_listed_and_served_read_only(server):
    names = requests.get(f"{server.url}/workflow_templates", timeout=10).json()["latentgraph"]
    expected = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    assert names == expected and "txt2img" in names
    served = requests.get(f"{server.url}/api/workflow_templates/latentgraph/txt2img.json", timeout=10).json()
    assert served == json.loads((REPO / "workflows" / "txt2img.json").read_text())
    assert requests.get(f"{server.url}/workflow_templates/latentgraph/..%2Fpyproject.toml",
                        timeout=10).status_code in (403, 404)
    assert requests.post(f"{server.url}/workflow_templates/latentgraph/txt2img.json", data=b"{}",
                         timeout=10).status_code == 405


def test_the_default_ui_workflow_is_the_api_example():
    from graph import build_registry
    from graph.ui_format import ui_to_api

    ui = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    api = json.loads((REPO / "workflows" / "txt2img_api.json").read_text())
    converted = ui_to_api(ui, build_registry("nodes", None))
    assert converted == api
    assert converted["4"]["inputs"]["ckpt_name"] == "latentgraph-house-v1.safetensors"
