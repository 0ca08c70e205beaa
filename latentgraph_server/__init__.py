"""The pieces behind ``server.py``: configuration, the persistent queue, the prompt worker,
the websocket hub, safe paths, uploads, security middleware and the OpenAPI document.

Each module has one job; ``server.py`` wires them to aiohttp routes.
"""
