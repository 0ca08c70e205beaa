"""Fuzzing every route with hypothesis: no input gives a 5xx, and the server keeps serving.

JSON routes, raw bodies, GET queries, the workflow library (/userdata), uploads, headers
with bytes that are not UTF-8, and the websocket; strategies include integers far past
64 bits and names past 255 bytes.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from tests.engine_nodes import TEST_NODES
from tests.server_support import ServerThread, make_config, value_prompt, wait_history

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NODE_NAMES = sorted(cls.__name__ for cls in TEST_NODES)
INPUT_NAMES = sorted({name for cls in TEST_NODES for name in cls.definition().inputs})

# Integers far past 64 bits: SQLite, int() and the JSON parser each have their own limits.
big_integers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70),
                         st.integers(min_value=10**300, max_value=10**400), st.just(-(2**63) - 1))
scalars = st.one_of(st.none(), st.booleans(), big_integers,
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
node_ids = st.one_of(st.integers(0, 6).map(str), st.text(max_size=4))
links = st.tuples(st.one_of(node_ids, st.integers(-2, 8), json_values),
                  st.one_of(st.integers(-2, 3), json_values)).map(list)
input_values = st.one_of(json_values, links, st.integers(-5, 5000), st.sampled_from(["fast", "slow", ""]))
nodes = st.fixed_dictionaries(
    {"class_type": st.one_of(st.sampled_from(NODE_NAMES), json_values)},
    optional={"inputs": st.one_of(st.dictionaries(st.one_of(st.sampled_from(INPUT_NAMES), st.text(max_size=6)),
                                                  input_values, max_size=5), json_values),
              "_meta": json_values},
)
api_prompts = st.dictionaries(node_ids, st.one_of(nodes, json_values), max_size=6)
ui_nodes = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(0, 6), json_values), "type": st.one_of(st.sampled_from(NODE_NAMES), json_values)},
    optional={"mode": st.one_of(st.sampled_from([0, 2, 4]), json_values),
              "widgets_values": st.one_of(st.lists(input_values, max_size=4), json_values),
              "inputs": st.one_of(st.lists(st.fixed_dictionaries(
                  {"name": st.one_of(st.sampled_from(INPUT_NAMES), json_values),
                   "link": st.one_of(st.integers(0, 6), json_values)}), max_size=3), json_values),
              "outputs": json_values},
)
ui_prompts = st.fixed_dictionaries({
    "nodes": st.lists(ui_nodes, max_size=5),
    "links": st.one_of(st.lists(st.one_of(st.lists(st.one_of(st.integers(0, 6), json_values), max_size=7),
                                          json_values), max_size=5), json_values),
})
prompt_bodies = st.one_of(
    st.fixed_dictionaries({"prompt": st.one_of(api_prompts, ui_prompts, json_values)}, optional={
        "client_id": json_values, "prompt_id": json_values, "front": json_values, "number": json_values,
        "extra_data": json_values, "partial_execution_targets": st.one_of(st.lists(node_ids, max_size=3),
                                                                          json_values)}),
    json_values,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Only the engine's pure-Python test nodes (nothing that sleeps).
    config = make_config(tmp_path_factory.mktemp("fuzz"), node_packages=["tests.engine_nodes"], cpu=True)
    with ServerThread(config) as running:
        yield running


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory):
    # The same, behind --auth-token: credentials are parsed before anything else.
    config = make_config(tmp_path_factory.mktemp("fuzz-locked"), node_packages=["tests.engine_nodes"], cpu=True,
                         auth_token="fuzz-token")
    with ServerThread(config) as running:
        yield running


def post(server, path: str, body: bytes) -> requests.Response:
    response = requests.post(server.url + path, data=body, timeout=30)
    assert response.status_code < 500, (path, body[:300], response.text[:500])
    return response


def encode(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@settings(FUZZ, max_examples=150)
@given(body=prompt_bodies)
def test_fuzz_post_prompt(server, body):
    response = post(server, "/prompt", encode(body))
    if response.status_code == 400:
        assert "error" in response.json() and "node_errors" in response.json()


@FUZZ
@given(raw=st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode)))
def test_fuzz_raw_bodies(server, raw):
    for path in ("/prompt", "/queue", "/history", "/interrupt", "/free", "/upload/image", "/settings",
                 "/settings/Comfy.Locale"):
        post(server, path, raw)


@FUZZ
@given(path=st.sampled_from(["/queue", "/history", "/interrupt", "/free", "/api/queue", "/settings",
                             "/settings/Comfy.Locale", "/api/settings/a.b", "/jobs/cancel", "/jobs/x/cancel"]),
       body=st.one_of(json_values, st.fixed_dictionaries({}, optional={
           "clear": json_values, "job_ids": st.one_of(st.lists(st.text(max_size=5)), json_values), "delete": st.one_of(st.lists(st.text(max_size=5)), json_values),
           "prompt_id": json_values, "unload_models": json_values, "free_memory": json_values})))
def test_fuzz_other_json_routes(server, path, body):
    post(server, path, encode(body))


@FUZZ
@given(body=st.one_of(json_values, st.fixed_dictionaries({}, optional={"enabled": json_values,
                                                                     "clientId": json_values})))
def test_fuzz_log_subscription(server, body):
    response = requests.patch(f"{server.url}/internal/logs/subscribe", data=encode(body), timeout=30)
    assert response.status_code < 500, (body, response.text[:300])


@FUZZ
@given(params=st.dictionaries(st.sampled_from(["filename", "type", "subfolder", "preview", "channel",
                                                "max_items", "offset", "status", "limit", "sort_by",
                                                "sort_order", "workflow_id"]), st.text(max_size=12), max_size=5),
       segment=st.text(min_size=1, max_size=12))
def test_fuzz_get_routes(server, params, segment):
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())
    part = quote(segment, safe='')
    for path in ("/view", "/history", f"/history/{part}", f"/object_info/{part}", f"/models/{part}",
                 # the official frontend's routes (latentgraph_server/settings.py, jobs.py, model_library.py, frontend.py)
                 "/jobs", f"/jobs/{part}", f"/settings/{part}", "/settings", "/users", f"/experiment/models/{part}",
                 f"/view_metadata/{part}", f"/internal/files/{part}", f"/experiment/models/preview/checkpoints/0/{part}", "/internal/folder_paths", "/features",
                 f"/global_subgraphs/{part}", f"/templates/{part}"):
        response = requests.get(f"{server.url}{path}?{query}", timeout=30)
        assert response.status_code < 500, (path, query, response.text[:300])


# Names: long (past 255 bytes), non-ASCII, control characters, separators and traversal.
names = st.one_of(st.text(max_size=12), st.text(min_size=250, max_size=300), st.sampled_from(
    ["..", "a/../..", "%2e%2e", "a" * 256 + ".json", "\u00e9t\u00e9.json", "a\nb", "/etc/passwd", "x\\y", "."]))


@FUZZ
@given(name=names, dest=names, body=st.binary(max_size=64),
       params=st.dictionaries(st.sampled_from(["dir", "recurse", "full_info", "split", "overwrite"]),
                              st.one_of(st.text(max_size=8), st.integers().map(str)), max_size=3))
def test_fuzz_userdata(server, name, dest, body, params):
    file, target = quote(name, safe=""), quote(dest, safe="")
    for method, path in (("GET", "/userdata"), ("POST", f"/userdata/{file}"), ("GET", f"/userdata/{file}"),
                         ("POST", f"/userdata/{file}/move/{target}"), ("DELETE", f"/userdata/{file}"),
                         ("GET", f"/workflow_templates/latentgraph/{file}")):
        if not file and "{file}" not in path:
            continue
        response = requests.request(method, f"{server.url}{path}", params=params, data=body, timeout=30)
        assert response.status_code < 500, (method, path, params, response.text[:300])


@FUZZ
@given(filename=names, fields=st.dictionaries(st.sampled_from(["type", "subfolder", "overwrite", "original_ref"]),
                                              st.one_of(names, json_values.map(json.dumps)), max_size=4),
       data=st.one_of(st.binary(max_size=64), st.just(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)),
       path=st.sampled_from(["/upload/image", "/upload/mask"]))
def test_fuzz_uploads(server, filename, fields, data, path):
    response = requests.post(f"{server.url}{path}", files={"image": (filename or "x", data, "image/png")},
                             data=fields, timeout=30)
    assert response.status_code < 500, (path, filename[:50], fields, response.text[:300])


@FUZZ
@given(header=st.sampled_from([b"Authorization", b"Cookie", b"Origin", b"Sec-Fetch-Site", b"Content-Type",
                                b"X-Anything"]),
       value=st.tuples(st.sampled_from([b"", b"Bearer ", b"latentgraph_token=", b"http://"]),
                       st.binary(min_size=1, max_size=40)).map(b"".join).filter(
                           lambda raw: b"\r" not in raw and b"\n" not in raw),
       route=st.sampled_from([b"GET /queue", b"POST /prompt", b"GET /system_stats", b"POST /free", b"GET /view"]))
def test_fuzz_non_utf8_headers(server, locked_server, header, value, route):
    body = b'{"prompt": {}}'
    request = (route + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b": " + value +
               b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    for target in (server, locked_server):
        with socket.create_connection(("127.0.0.1", target.port), timeout=30) as sock:
            sock.sendall(request)
            status_line = sock.recv(65536).split(b"\r\n", 1)[0]
        if status_line:  # aiohttp may close the connection on a header it cannot parse at all
            status = int(status_line.split()[1])
            assert status < 500, (route, header, value, status_line)


@FUZZ
@given(client_id=st.one_of(st.text(max_size=8), st.text(min_size=300, max_size=400)),
       messages=st.lists(st.one_of(st.text(max_size=64), st.binary(max_size=64), json_values.map(json.dumps),
                                   # ComfyUI's feature-flags handshake, with any data
                                   json_values.map(lambda data: json.dumps({"type": "feature_flags", "data": data}))),
                         max_size=4))
def test_fuzz_websocket(server, client_id, messages):
    with connect(f"{server.ws_url}?clientId={quote(client_id, safe='')}", open_timeout=30) as socket_:
        first = json.loads(socket_.recv(timeout=30))
        assert first["type"] == "status"
        for message in messages:
            socket_.send(message)
    assert requests.get(f"{server.url}/prompt", timeout=30).status_code == 200


def test_server_still_serves_after_fuzzing(server):
    requests.post(f"{server.url}/queue", json={"clear": True})
    requests.post(f"{server.url}/interrupt")
    reply = requests.post(f"{server.url}/prompt", json={"prompt": value_prompt(9)}).json()
    assert wait_history(server.url, reply["prompt_id"], timeout=60)["outputs"]["2"] == {"value": [9]}
    assert requests.get(f"{server.url}/object_info").status_code == 200
