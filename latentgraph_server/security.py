"""Request guards: bearer-token auth, same-origin checks and DNS-rebinding protection.

- With a token, every route needs ``Authorization: Bearer TOKEN`` (401 otherwise). The
  websocket and ``/view`` (which browsers load from ``<img>`` tags, unable to set
  headers) also accept ``?token=TOKEN``. So does the editor page ``/``: opening
  ``/?token=TOKEN`` sets an HttpOnly, ``SameSite=Strict`` cookie holding the token, which the
  browser then sends with the page's scripts, API calls, websocket and images (the cookie
  is never sent by other sites' pages, and their state-changing requests fail the origin
  check below anyway).
- A state-changing request (anything but GET/HEAD/OPTIONS) or a websocket upgrade whose
  ``Origin`` names another host than the request's ``Host`` is refused (403): a page on
  another site cannot drive a local server.
- A state-changing request or websocket upgrade that a browser marks
  ``Sec-Fetch-Site: cross-site`` is refused (403) even without an ``Origin`` header.
- Bound to a loopback address, the server only answers requests whose ``Host`` is a
  loopback name, so a rebound DNS name cannot reach it from a browser either.
- Secrets never leave the server: ``redact_argv`` hides them in ``/system_stats``.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from latentgraph_server.errors import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_QUERY_TOKEN_PATHS = frozenset({"/", "/ws", "/api/ws", "/view", "/api/view"})
TOKEN_COOKIE = "latentgraph_token"
SECRET_FLAGS = ("--auth-token",)
REDACTED = "***"


def redact_argv(argv: list[str]) -> list[str]:
    """``argv`` with the values of secret flags replaced (``--auth-token T`` and ``--auth-token=T``)."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            shown.append(REDACTED)
            hide_next = False
            continue
        flag, equals, _value = arg.partition("=")
        if flag in SECRET_FLAGS:
            if equals:
                shown.append(f"{flag}={REDACTED}")
            else:
                shown.append(arg)
                hide_next = True
            continue
        shown.append(arg)
    return shown


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_and_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    try:  # urlsplit refuses some malformed hosts ("[") and .port bad ports: both never match
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return netloc.lower(), None
    if port is None:
        port = {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(scheme)
    return (parts.hostname or "").lower(), port


def same_origin(origin: str, host: str, scheme: str) -> bool:
    """Whether an ``Origin`` header names the host (and port) the request was sent to."""
    if not origin or origin == "null" or not host:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:  # e.g. "http://[": no origin this server has
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return _host_and_port(parts.netloc, parts.scheme) == _host_and_port(host, scheme)


def make_security_middleware(auth_token: str | None, loopback_only: bool) -> Callable:
    """The aiohttp middleware enforcing the rules above."""
    token_bytes = _bytes(auth_token) if auth_token else None

    @web.middleware
    async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if loopback_only:
            hostname, _ = _host_and_port(host, "http")
            if hostname not in _LOOPBACK_NAMES:
                return error_response(403, "this server only answers requests addressed to localhost", "forbidden_host")
        if token_bytes is not None and not _authorized(request, token_bytes):
            response = error_response(401, "missing or wrong bearer token (the editor: open /?token=TOKEN)",
                                      "unauthorized")
            response.headers["WWW-Authenticate"] = 'Bearer realm="latentgraph"'
            return response
        upgrading = request.headers.get("Upgrade", "").lower() == "websocket"
        origin = request.headers.get("Origin")
        if request.method not in _SAFE_METHODS or upgrading:
            if origin is not None and not same_origin(origin, host, request.scheme):
                return error_response(403, "cross-origin request refused", "cross_origin")
            if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
                return error_response(403, "cross-site request refused", "cross_origin")
        response = await handler(request)
        if token_bytes is not None and request.path == "/" and "token" in request.query:
            response.set_cookie(TOKEN_COOKIE, auth_token, httponly=True, samesite="Strict", path="/")
        return response

    return security


def _authorized(request: web.Request, token: bytes) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(_bytes(value.strip()), token):
        return True
    cookie = request.cookies.get(TOKEN_COOKIE)
    if cookie is not None and hmac.compare_digest(_bytes(cookie), token):
        return True
    if request.path in _QUERY_TOKEN_PATHS and request.method in _SAFE_METHODS:
        supplied = request.query.get("token")
        if supplied is not None and hmac.compare_digest(_bytes(supplied), token):
            return True
    return False


def _bytes(text: str) -> bytes:
    """UTF-8 bytes of a header value; aiohttp keeps undecodable bytes as surrogates, which
    ``surrogateescape`` turns back into the bytes sent (they then simply fail to match)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from an undecodable byte
        return text.encode("utf-8", "surrogatepass")
