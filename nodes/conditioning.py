"""Conditioning nodes: text prompts -> CONDITIONING, and CLIP options.

CONDITIONING is ComfyUI's list of ``[cond [1, 77k, D], extras]``; SDXL adds
``extras["pooled_output"]`` [1, 1280].
"""

from __future__ import annotations

from typing import Any

from graph import Input, Node, Output
from nodes.model_folders import models_of


class CLIPTextEncode(Node):
    """Encodes a prompt. Supports ``(word:1.2)``, ``(word)``, ``[word]``, ``embedding:name``
    (textual inversion, from models/embeddings) and prompts of any length."""

    category = "conditioning"
    text = Input("STRING", multiline=True, default="", tooltip="the prompt")
    clip = Input("CLIP")
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def fingerprint(cls, context: Any, text: str | None = None, **_: Any) -> list | None:
        """The embedding files the prompt names (every embedding file when the text is linked)."""
        from nodes.clip.embeddings import embedding_files_state
        from nodes.clip.prompt_weights import EMBEDDING_PREFIX, embedding_names

        if isinstance(text, str) and EMBEDDING_PREFIX not in text:
            return None
        folders = models_of(context.services).folders("embeddings")
        return embedding_files_state(folders, embedding_names(text) if isinstance(text, str) else None)

    def execute(self, text: str, clip: Any) -> tuple:
        from nodes.sd.memory import on_device
        from nodes.sd.text_encode import encode_prompt

        on_device(self.context, clip.device, *clip.encoders)
        services = self.context.services if self.context is not None else {}
        cond, pooled = encode_prompt(clip, text, models_of(services).folders("embeddings"))
        extras = {"pooled_output": pooled} if pooled is not None else {}
        return ([[cond, extras]],)


class CLIPSetLastLayer(Node):
    """Stops the text encoder early ("CLIP skip"): -1 is the last layer, -2 the one before."""

    category = "conditioning"
    clip = Input("CLIP")
    stop_at_clip_layer = Input("INT", default=-1, min=-24, max=-1, step=1)
    outputs = (Output("CLIP"),)

    def execute(self, clip: Any, stop_at_clip_layer: int) -> tuple:
        return (clip.with_last_layer(stop_at_clip_layer),)
