"""JSON encoding and decoding that leave the event loop room to run.

The json module's C scanner and encoder hold the GIL for a whole document: decoding a
100k-node prompt (6.7 MB) takes 0.4 s, during which the event loop, whichever thread does
the decoding, cannot answer anyone. Past ``YIELDING_BYTES`` these functions use the json
module's pure-Python scanner and encoder instead: the same results a few times slower,
but Python code hands the GIL back every few milliseconds (bench/event_loop_stall.py).
"""

from __future__ import annotations

import contextlib
import gc
import json
import json.scanner
from collections.abc import Iterator
from typing import Any

YIELDING_BYTES = 1024 * 1024


def _python_decoder() -> json.JSONDecoder:
    decoder = json.JSONDecoder()
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    return decoder


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """Pauses the cyclic garbage collector: decoding a large document allocates hundreds of
    thousands of objects, which trigger full collections that each hold the GIL for tens of
    milliseconds, and JSON values cannot form cycles for it to find."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def loads(text: str | bytes) -> Any:
    """``json.loads``; large texts are decoded by the Python scanner."""
    if len(text) <= YIELDING_BYTES:
        return json.loads(text)
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    with _no_collection():
        return _python_decoder().decode(text)


def dumps(value: Any, size_hint: int = 0) -> str:
    """Compact JSON text (odd objects as their repr). With ``size_hint`` (bytes the text is
    expected to take) past ``YIELDING_BYTES``, the Python encoder writes it."""
    encoder = json.JSONEncoder(separators=(",", ":"), default=repr)
    if size_hint <= YIELDING_BYTES:
        return encoder.encode(value)
    # iterencode without one-shot mode uses the Python encoder (json.encoder._make_iterencode).
    return "".join(encoder.iterencode(value))
