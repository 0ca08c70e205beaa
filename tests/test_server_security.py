"""Security defaults: origin checks, bearer auth, path confinement and upload limits."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib

import pytest
import requests
from PIL import Image
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.server_support import ServerThread, make_config, value_prompt

SECRET = b"TOP-SECRET-CONTENT"
LIMIT = 200_000


def png_bytes(size=(8, 8), color=(10, 20, 30, 255), mode="RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color[: len(mode)] if mode != "L" else color[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def claimed_size_png(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    data = bytearray(png_bytes((1, 1), mode="L"))
    ihdr = bytearray(data[16:29])  # IHDR payload: width, height, depth, colour, ...
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    return bytes(data)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(SECRET)
    for name in ("input", "output", "temp"):
        (root / name).mkdir()
        (root / name / "link.png").symlink_to(outside / "secret.png")
        (root / name / "linkdir").symlink_to(outside)
    (root / "output" / "page.html").write_text("<script>alert(1)</script>")
    return root


@pytest.fixture(scope="module")
def server(root):
    with ServerThread(make_config(root, max_upload_size=LIMIT)) as running:
        yield running


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    with ServerThread(make_config(tmp_path_factory.mktemp("locked"), auth_token="s3cret")) as running:
        yield running


# -- origin and host ------------------------------------------------------------------


def test_cross_origin_state_changes_are_refused(server):
    for origin in ("http://evil.example", "null", "http://127.0.0.1.evil.example",
                   "http://127.0.0.1:1"):
        response = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(1)},
                                 headers={"Origin": origin})
        assert response.status_code == 403, origin
        assert requests.post(f"{server.url}/queue", json={"clear": True}, headers={"Origin": origin}).status_code == 403
        assert requests.post(f"{server.url}/interrupt", headers={"Origin": origin}).status_code == 403
    same = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(1)},
                         headers={"Origin": f"http://127.0.0.1:{server.port}"})
    assert same.status_code == 200
    # Reading is allowed from anywhere the browser lets it (no CORS headers are sent).
    assert requests.get(f"{server.url}/queue", headers={"Origin": "http://evil.example"}).status_code == 200
    assert "Access-Control-Allow-Origin" not in requests.get(f"{server.url}/queue").headers


def test_cross_origin_websocket_is_refused(server):
    with pytest.raises(InvalidStatus) as refused:
        connect(server.ws_url, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    with connect(server.ws_url, origin=f"http://127.0.0.1:{server.port}") as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"


def test_malformed_origin_or_host_is_refused_not_a_server_error(server):
    # urlsplit raises on an unclosed IPv6 bracket: that was a 500 (found by the header fuzz test).
    for origin in ("http://[", "http://[::1"):
        response = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(1)}, headers={"Origin": origin})
        assert response.status_code == 403 and response.json()["error"]["type"] == "cross_origin", origin
    refused = requests.get(f"{server.url}/queue", headers={"Host": "["})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden_host"


def test_foreign_host_header_is_refused_on_loopback(server):
    assert requests.get(f"{server.url}/queue", headers={"Host": "rebound.example"}).status_code == 403
    assert requests.get(f"{server.url}/queue", headers={"Host": f"localhost:{server.port}"}).status_code == 200


# -- bearer token -------------------------------------------------------------------------


def test_auth_token_is_required_everywhere(locked):
    good = {"Authorization": "Bearer s3cret"}
    for method, path in (("GET", "/object_info"), ("GET", "/queue"), ("GET", "/api/history"),
                         ("GET", "/view?filename=x.png"), ("GET", "/openapi.json"), ("POST", "/interrupt"),
                         ("GET", "/"), ("GET", "/system_stats")):
        assert requests.request(method, locked.url + path).status_code == 401, path
        wrong = requests.request(method, locked.url + path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, path
    assert requests.post(f"{locked.url}/prompt", json={"prompt": value_prompt(1)}).status_code == 401
    assert requests.post(f"{locked.url}/prompt", json={"prompt": value_prompt(1)}, headers=good).status_code == 200
    assert requests.get(f"{locked.url}/queue", headers=good).status_code == 200
    # The query token is accepted only where headers cannot be set (websocket, <img src=/view>).
    assert requests.get(f"{locked.url}/queue?token=s3cret").status_code == 401
    assert requests.get(f"{locked.url}/view?filename=x.png&token=s3cret").status_code == 404


def test_editor_page_with_the_token_sets_a_strict_cookie_that_authorizes_the_page(locked):
    assert requests.get(f"{locked.url}/?token=nope").status_code == 401
    browser = requests.Session()
    page = browser.get(f"{locked.url}/?token=s3cret")
    assert page.status_code == 200
    cookie = page.headers["Set-Cookie"]
    assert "latentgraph_token=s3cret" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # The page's own requests now carry the cookie: API reads, and writes from its origin.
    assert browser.get(f"{locked.url}/api/queue").status_code == 200
    origin = {"Origin": f"http://127.0.0.1:{locked.port}"}
    assert browser.post(f"{locked.url}/api/prompt", json={"prompt": value_prompt(1)}, headers=origin).status_code == 200
    # The cookie does not lift the origin check, and a wrong cookie is no token.
    assert browser.post(f"{locked.url}/api/interrupt", headers={"Origin": "http://evil.example"}).status_code == 403
    assert requests.get(f"{locked.url}/api/queue", cookies={"latentgraph_token": "nope"}).status_code == 401


def test_auth_token_on_websocket(locked):
    with pytest.raises(InvalidStatus) as refused:
        connect(locked.ws_url)
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        connect(f"{locked.ws_url}?token=wrong")
    with connect(f"{locked.ws_url}?token=s3cret") as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"
    with connect(locked.ws_url, additional_headers={"Authorization": "Bearer s3cret"}) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"


# -- paths ---------------------------------------------------------------------------------

VIEW_ATTACKS = [
    "filename=../outside/secret.png",
    "filename=..%2Foutside%2Fsecret.png",
    "filename=%2E%2E%2Foutside%2Fsecret.png",
    "filename=..%252Foutside%252Fsecret.png",
    "filename=%252E%252E%252Foutside%252Fsecret.png",
    "filename=secret.png&subfolder=..%2Foutside",
    "filename=secret.png&subfolder=../outside",
    "filename=secret.png&subfolder=%2E%2E%2F%2E%2E%2F..%2Foutside",
    "filename=secret.png&subfolder=a/../../outside",
    "filename=secret.png&subfolder=..%252Foutside",
    "filename={abs}",
    "filename=secret.png&subfolder={absdir}",
    "filename=link.png",
    "filename=secret.png&subfolder=linkdir",
    "filename=link.png&type=input",
    "filename=link.png&type=temp",
    "filename=..%5Coutside%5Csecret.png",
    "filename=secret.png&subfolder=..%5Coutside",
    "filename=C:%5Cwindows%5Cwin.ini",
    "filename=secret.png%00.png&subfolder=..%2Foutside",
    "filename=link.png%00",
    "filename=secret.png&type=..%2Foutside",
    "filename=secret.png [..%2Foutside]",
    "filename=secret.png&subfolder=linkdir%2F..%2F..%2Foutside",
]


@pytest.mark.parametrize("attack", VIEW_ATTACKS)
def test_view_cannot_leave_its_folder(server, root, attack):
    query = attack.format(abs=root / "outside" / "secret.png", absdir=root / "outside")
    response = requests.get(f"{server.url}/view?{query}")
    assert response.status_code in (400, 403, 404), query
    assert SECRET not in response.content
    for prefix in ("/api",):
        assert SECRET not in requests.get(f"{server.url}{prefix}/view?{query}").content


def test_view_serves_non_images_as_downloads(server):
    response = requests.get(f"{server.url}/view", params={"filename": "page.html"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def tree(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}


UPLOAD_ATTACKS = [
    ("../escape.png", ""), ("/tmp/escape.png", ""), ("..\\escape.png", ""), ("sub/escape.png", ""),
    ("..", ""), ("escape.png", "../outside"), ("escape.png", "/abs"), ("escape.png", "..\\outside"),
    ("escape.png", "linkdir"), ("escape.png", "a/../../outside"), ("escape.png", "ok\x00"),
    ("escape.png", "C:\\temp"), ("link.png", ""),
]


@pytest.mark.parametrize(("filename", "subfolder"), UPLOAD_ATTACKS)
@pytest.mark.parametrize("route", ["/upload/image", "/upload/mask"])
def test_uploads_cannot_leave_their_folder(server, root, filename, subfolder, route):
    before = tree(root / "outside")
    data = {"subfolder": subfolder, "overwrite": "true",
            "original_ref": json.dumps({"filename": "base.png", "type": "input"})}
    (root / "input" / "base.png").write_bytes(png_bytes())
    response = requests.post(f"{server.url}{route}", files={"image": (filename, png_bytes())}, data=data)
    if response.status_code == 200:
        # The multipart encoding may already have reduced the name to a plain one (e.g. dropping a
        # backslash escape); then it must have been stored as that plain name inside the input folder.
        saved = response.json()
        assert "/" not in saved["name"] and "\\" not in saved["name"] and saved["name"] not in ("..", ".")
        assert (root / "input" / saved["subfolder"] / saved["name"]).resolve().is_relative_to(root / "input")
    else:
        assert response.status_code == 400, response.text
    assert tree(root / "outside") == before
    assert (root / "outside" / "secret.png").read_bytes() == SECRET
    assert not list(root.glob("escape*")) and not (root / "abs").exists()


def test_upload_type_must_be_a_known_folder(server):
    response = requests.post(f"{server.url}/upload/image", files={"image": ("a.png", png_bytes())},
                             data={"type": "../outside"})
    assert response.status_code == 400


def test_mask_original_ref_cannot_leave_its_folder(server):
    for ref in ({"filename": "../outside/secret.png", "type": "input"},
                {"filename": "secret.png", "subfolder": "../outside", "type": "input"},
                {"filename": "link.png", "type": "output"}, {"filename": "x.png", "type": "/etc"}):
        response = requests.post(f"{server.url}/upload/mask", files={"image": ("m.png", png_bytes())},
                                 data={"original_ref": json.dumps(ref)})
        assert response.status_code == 400, ref


# -- uploads ---------------------------------------------------------------------------------


def test_upload_names_dedupe_and_overwrite(server, root):
    first = requests.post(f"{server.url}/upload/image", files={"image": ("cat.png", png_bytes())}).json()
    assert first == {"name": "cat.png", "subfolder": "", "type": "input"}
    same = requests.post(f"{server.url}/upload/image", files={"image": ("cat.png", png_bytes())}).json()
    assert same["name"] == "cat.png"
    other = png_bytes(color=(200, 0, 0, 255))
    renamed = requests.post(f"{server.url}/upload/image", files={"image": ("cat.png", other)}).json()
    assert renamed["name"] == "cat (1).png"
    replaced = requests.post(f"{server.url}/upload/image", files={"image": ("cat.png", other)},
                             data={"overwrite": "true"}).json()
    assert replaced["name"] == "cat.png" and (root / "input" / "cat.png").read_bytes() == other
    nested = requests.post(f"{server.url}/api/upload/image", files={"image": ("dog.png", png_bytes())},
                           data={"subfolder": "pets/dogs", "type": "temp"}).json()
    assert nested == {"name": "dog.png", "subfolder": "pets/dogs", "type": "temp"}
    assert (root / "temp" / "pets" / "dogs" / "dog.png").is_file()


def test_upload_limits_and_non_images(server):
    noisy = Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3))
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    assert len(buffer.getvalue()) > LIMIT
    too_big = requests.post(f"{server.url}/upload/image", files={"image": ("big.png", buffer.getvalue())})
    assert too_big.status_code == 413
    text = requests.post(f"{server.url}/upload/image", files={"image": ("notes.png", b"hello, not an image")})
    assert text.status_code == 400
    truncated = requests.post(f"{server.url}/upload/image", files={"image": ("cut.png", png_bytes((64, 64))[:80])})
    assert truncated.status_code == 400
    assert requests.post(f"{server.url}/upload/image", data={"x": "1"}).status_code == 400
    assert requests.post(f"{server.url}/upload/image", data=b"raw", headers={
        "Content-Type": "multipart/form-data; boundary=zz"}).status_code == 400


def test_decompression_bombs_are_refused(server, root):
    for width, height in ((10_000, 10_000), (40_000, 40_000)):  # over Pillow's warning, over its error limit
        bomb = claimed_size_png(width, height)
        response = requests.post(f"{server.url}/upload/image", files={"image": ("bomb.png", bomb)})
        assert response.status_code == 400, (width, height)
    assert not (root / "input" / "bomb.png").exists()


def test_mask_upload_sets_alpha(server, root):
    requests.post(f"{server.url}/upload/image", files={"image": ("photo.png", png_bytes((4, 4), mode="RGB"))},
                  data={"overwrite": "true"})
    mask = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    mask.putpixel((0, 0), (0, 0, 0, 255))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    response = requests.post(f"{server.url}/upload/mask", files={"image": ("photo_mask.png", buffer.getvalue())},
                             data={"original_ref": json.dumps({"filename": "photo.png", "type": "input"}),
                                   "overwrite": "true"})
    assert response.status_code == 200, response.text
    result = Image.open(root / "input" / response.json()["name"])
    assert result.mode == "RGBA" and result.size == (4, 4)
    assert result.getpixel((0, 0))[:3] == (10, 20, 30)
    assert result.getpixel((3, 3))[3] == 0
