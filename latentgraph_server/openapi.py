"""Route rows and the OpenAPI document generated from them (GET /openapi.json).

Each module declares the rows of the routes it handles (``ROUTES``, beside its handler
class); ``server.py``'s ``ROUTES`` mounts them into the one table it registers and
describes, so the document cannot drift from what the server answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

API_PREFIX = "/api"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str  # name of the handler method on its owner
    summary: str
    query: tuple[str, ...] = ()
    body: str | None = None  # "json" or "multipart"
    responses: dict[str, str] = field(default_factory=dict)
    owner: str = ""  # attribute of the server's Handlers that handles it ("": Handlers itself); set by mount
    operation_id: str = ""  # OpenAPI operationId; the handler's name when empty


def mount(owner: str, routes: list[Route], *, qualified_ids: bool = True) -> list[Route]:
    """A module's rows handled by ``Handlers.<owner>``; their operation ids are
    ``owner_handler``, or just the handler's name without ``qualified_ids``."""
    return [replace(route, owner=owner, operation_id=f"{owner}_{route.handler}" if qualified_ids else route.handler)
            for route in routes]


def openapi_document(routes: list[Route], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        for prefix in ("", API_PREFIX):
            # aiohttp's "{name:regex}" is "{name}" in OpenAPI
            path = prefix + re.sub(r"{(\w+):[^}]+}", r"{\1}", route.path)
            paths.setdefault(path, {})[route.method.lower()] = _operation(route, prefix)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Latentgraph", "version": version,
                 "description": "ComfyUI-compatible API of Latentgraph. Every route is also served under /api."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{}, {"bearer": []}],
        "paths": paths,
    }


def _operation(route: Route, prefix: str) -> dict[str, Any]:
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in re.findall(r"{(\w+)(?::[^}]+)?}", route.path)]
    parameters += [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                   for name in route.query]
    responses = {"200": {"description": "OK"}}
    responses.update({code: {"description": text} for code, text in route.responses.items()})
    responses.setdefault("401", {"description": "missing or wrong bearer token (with --auth-token)"})
    if route.method != "GET":
        responses.setdefault("403", {"description": "cross-origin request refused"})
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.operation_id or route.handler}{'_api' if prefix else ''}",
        "parameters": parameters,
        "responses": responses,
    }
    if route.body == "json":
        operation["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
    elif route.body == "multipart":
        operation["requestBody"] = {"content": {"multipart/form-data": {"schema": {"type": "object"}}}}
    return operation
