"""Live previews: who gets them, and the binary websocket frames that carry them.

As ComfyUI: the server's ``--preview-method`` is ``none`` by default, and a prompt may
choose its own in ``extra_data.preview_method`` (the official frontend's "Live preview
method" setting sends it; ``default`` means "the server's"). Unlike ComfyUI, a client that
asks for previews gets them even under ``none``: a websocket whose first message is
``{"type": "feature_flags", "data": {"supports_preview_metadata": true}}`` (what the
official frontend sends on connecting, and our editor too). A client that asks nothing,
such as an API client waiting for its images, gets no binary frames at all.

So for each preview of a prompt, ``preview_policy`` decides:

- the prompt said ``none``: nobody gets it;
- the prompt or the server named a method: every connection of the prompt's client;
- otherwise: only its connections that asked.

Frames are ComfyUI's: ``PREVIEW_IMAGE`` (type 1, then the image format, 1 = JPEG, then
the JPEG) for clients that did not announce ``supports_preview_metadata``, and
``PREVIEW_IMAGE_WITH_METADATA`` (type 4, a 4-byte length, JSON naming the node and
prompt and the ``image_type``, then the JPEG) for those that did.

Methods: ``latent2rgb`` is the per-family linear projection the samplers draw by default
(``nodes/sampling/latent_preview.py``). With the server's ``--preview-method auto`` or
``taesd``, a TAESD decoder found in ``models/vae_approx/`` (``taesd_decoder`` for SD1.x/SD2.x,
``taesdxl_decoder`` for SDXL; ``.safetensors`` or ``.pth``) draws them instead
(``nodes/sampling/taesd.py``), as in ComfyUI; without one, latent2rgb, and the server says so at
start-up (nothing is ever downloaded). The method is the server's: a prompt's own
``preview_method`` turns previews on or off but does not switch the decoder.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("latentgraph.previews")

PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
JPEG = 1
PNG = 2
JPEG_QUALITY = 85
# What the official frontend (and our editor) announce to ask for previews.
PREVIEW_FLAG = "supports_preview_metadata"
# ComfyUI's TAESD decoder files, in models/vae_approx/, for the latent families we have.
TAESD_DECODERS = ("taesd_decoder", "taesdxl_decoder")

ONLY_ASKERS = "ask"  # preview_policy: send only to the connections that asked


def preview_policy(extra_data: dict[str, Any], server_method: str) -> str:
    """``"none"`` (nobody), a method name (every connection of the prompt's client), or
    ``ONLY_ASKERS``; see the module docstring."""
    requested = extra_data.get("preview_method")
    if isinstance(requested, str) and requested in PREVIEW_METHODS:
        return requested
    if server_method != "none":
        return server_method
    return ONLY_ASKERS


def taesd_decoders(folders: Iterable[Path]) -> list[Path]:
    """TAESD decoder files present in the given (vae_approx) folders."""
    found = []
    for folder in folders:
        if Path(folder).is_dir():
            found += sorted(p for p in Path(folder).iterdir() if p.stem in TAESD_DECODERS and p.is_file())
    return found


def explain_method(method: str, vae_approx_folders: Iterable[Path]) -> str | None:
    """A start-up note on what ``--preview-method`` auto or taesd will draw with, else None."""
    if method not in ("auto", "taesd"):
        return None
    decoders = taesd_decoders(vae_approx_folders)
    if not decoders:
        return (f"--preview-method {method}: no TAESD decoder in models/vae_approx/ "
                f"({', '.join(name + '.safetensors' for name in TAESD_DECODERS)}); using latent2rgb previews "
                "(nothing is downloaded)")
    return (f"--preview-method {method}: TAESD previews from {', '.join(p.name for p in decoders)}; "
            "latent2rgb for latent families without one")


def install_taesd_previews(vae_approx_folders: Iterable[Path]) -> list[str]:
    """Makes the samplers' previews TAESD's for every latent family with a decoder in the
    folders (imports torch: call it where the nodes run); returns those families."""
    from nodes.sampling import latent_preview
    from nodes.sampling.taesd import TaesdPreviewer, find_decoders

    files = find_decoders(vae_approx_folders)
    latent_preview.set_previewer(TaesdPreviewer(files) if files else None)
    return sorted(files)


def remove_taesd_previews() -> None:
    """Back to latent2rgb (when the server stops; nothing to do if torch was never loaded)."""
    latent_preview = sys.modules.get("nodes.sampling.latent_preview")
    if latent_preview is not None:
        latent_preview.set_previewer(None)


def encode_image(image: Any, png: bool = False) -> bytes:
    buffer = io.BytesIO()
    if png:
        image.save(buffer, format="PNG", compress_level=1)  # sent at once, not kept: fast over small
    else:
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def legacy_frame(encoded: bytes, png: bool = False) -> bytes:
    return struct.pack(">II", PREVIEW_IMAGE, PNG if png else JPEG) + encoded


def metadata_frame(encoded: bytes, node_id: str | None, prompt_id: str, png: bool = False) -> bytes:
    metadata = json.dumps({"node_id": node_id, "display_node_id": node_id, "parent_node_id": None,
                           "real_node_id": node_id, "prompt_id": prompt_id,
                           "image_type": "image/png" if png else "image/jpeg"},
                          separators=(",", ":")).encode("utf-8")
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(metadata)) + metadata + encoded


def preview_frames(data: dict[str, Any], png: bool = False) -> tuple[bytes, bytes] | None:
    """(legacy frame, metadata frame) for a ``preview`` event (JPEG) or a SaveImageWebsocket
    image (``png``), or None if it cannot be encoded."""
    image = data.get("image")
    if image is None:
        return None
    try:
        encoded = encode_image(image, png)
    except Exception:
        log.exception("cannot encode an image for the websocket")
        return None
    node_id, prompt_id = data.get("node"), str(data.get("prompt_id") or "")
    return legacy_frame(encoded, png), metadata_frame(encoded, node_id, prompt_id, png)
