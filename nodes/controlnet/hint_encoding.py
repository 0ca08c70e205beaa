"""A ControlNet's hint encoder run once per sampling run instead of once per step.

diffusers' ``ControlNetModel.forward`` passes ``controlnet_cond`` through the hint encoder
(``controlnet_cond_embedding``: eight convolutions at the hint's full resolution) on every
call, although its output depends on the hint alone. On small models that is a large share
of a step (bench/controlnet.py). :func:`accept_encoded_hints` gives a loaded network's
encoder a subclass that lets an already-encoded hint through unchanged; it is recognised by
its channels, which are the encoder's output channels (320 on SD1.x) and never a hint
image's (3). The state dict and every other use stay as they were. :func:`encoded_hint`
encodes a prepared hint once and keeps it in the sampling run's cache.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding


class PassEncodedHints(ControlNetConditioningEmbedding):
    """diffusers' hint encoder, except that an input with the encoder's output channels is
    already encoded and returned as it is."""

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        if conditioning.shape[1] == self.conv_out.out_channels:
            return conditioning
        return super().forward(conditioning)


def accept_encoded_hints(model: torch.nn.Module) -> bool:
    """Lets ``model``'s hint encoder take encoded hints (see the module docstring); False,
    and nothing changed, when its hints could be mistaken for encoded ones."""
    embedding = getattr(model, "controlnet_cond_embedding", None)
    if getattr(model.config, "controlnet_conditioning_channel_order", "rgb") != "rgb":
        return False  # diffusers flips a BGR network's hint before the encoder: an encoded one too
    if type(embedding) is not ControlNetConditioningEmbedding:
        return isinstance(embedding, PassEncodedHints)
    if embedding.conv_in.in_channels == embedding.conv_out.out_channels:
        return False
    embedding.__class__ = PassEncodedHints
    return True


def encoded_hint(model: torch.nn.Module, hint: torch.Tensor, cache: dict, key: Hashable) -> torch.Tensor:
    """``hint`` [N, C, H, W] (as ``residuals.prepared_hint`` gives it) through ``model``'s hint
    encoder: [N, E, H / 8, W / 8], computed once per ``key`` and kept in ``cache``. All N rows
    are encoded, as diffusers and ComfyUI do each step, even when they repeat one image: a
    convolution's last bits depend on its batch size, and the image should not."""
    if key not in cache:
        cache[key] = model.controlnet_cond_embedding(hint)
    return cache[key]
