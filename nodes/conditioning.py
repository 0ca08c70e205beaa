"""Conditioning nodes: text prompts -> CONDITIONING, and CLIP options.

CONDITIONING is ComfyUI's list of ``[cond [1, 77k, D], extras]``; SDXL adds
``extras["pooled_output"]`` [1, 1280].
"""

from __future__ import annotations

from typing import Any

from graph import Input, Node, Output


class CLIPTextEncode(Node):
    """Encodes a prompt. Supports ``(word:1.2)``, ``(word)``, ``[word]`` and prompts of any length."""

    category = "conditioning"
    text = Input("STRING", multiline=True, default="", tooltip="the prompt")
    clip = Input("CLIP")
    outputs = (Output("CONDITIONING"),)

    def execute(self, text: str, clip: Any) -> tuple:
        from nodes.sd.memory import on_device
        from nodes.sd.text_encode import encode_prompt

        on_device(self.context, clip.device, *clip.encoders)
        cond, pooled = encode_prompt(clip, text)
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
