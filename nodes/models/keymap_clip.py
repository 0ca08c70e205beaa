"""Key maps for CLIP text encoders: transformers keys <- checkpoint keys.

Two source layouts occur in LDM checkpoints:

* HF CLIP (SD1.x ``cond_stage_model.transformer.text_model.``, SDXL
  ``conditioner.embedders.0.transformer.text_model.``): transformers' own names. The
  ``text_model.`` level is part of the checkpoint prefix here (transformers 5 dropped it
  from ``CLIPTextModel.state_dict()``, transformers 4 and ``CLIPTextModelWithProjection``
  keep it; both are handled).
* OpenCLIP (SD2.x ``cond_stage_model.model.``, SDXL ``conditioner.embedders.1.model.``):
  ``transformer.resblocks.N`` with a fused ``attn.in_proj_weight`` ``[3D, D]`` (q, k, v
  stacked), ``positional_embedding`` ``[77, D]`` and ``text_projection`` ``[D, P]`` (applied as
  ``x @ P``, i.e. the transpose of a ``Linear`` weight). Resblocks beyond the config's
  ``num_hidden_layers`` are not read (SD2 uses 23 of 24 layers).

Source keys carry no checkpoint prefix; the loader adds it with ``keymap.with_prefix``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from nodes.models.keymap import KeyMap, KeySource

_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_OPEN_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_QKV = {"q_proj": 0, "k_proj": 1, "v_proj": 2}


def hf_clip_key_map(target_keys: Iterable[str]) -> KeyMap:
    """Map transformers CLIP keys to HF-layout keys below the ``text_model`` level
    (``embeddings.*``, ``encoder.*``, ``final_layer_norm.*``); the caller's prefix supplies
    ``...transformer.text_model.``."""
    return {k: KeySource(k.removeprefix("text_model.")) for k in target_keys}


def open_clip_source(key: str) -> KeySource:
    """Return the OpenCLIP source of one transformers CLIP text-model key."""
    bare = key[len("text_model.") :] if key.startswith("text_model.") else key
    fixed = {
        "embeddings.token_embedding.weight": KeySource("token_embedding.weight"),
        "embeddings.position_embedding.weight": KeySource("positional_embedding"),
        "final_layer_norm.weight": KeySource("ln_final.weight"),
        "final_layer_norm.bias": KeySource("ln_final.bias"),
        "text_projection.weight": KeySource("text_projection", "transpose"),
    }
    if bare in fixed:
        return fixed[bare]
    m = _LAYER.match(bare)
    if not m:
        raise KeyError(key)
    n, rest = m.group(1), m.group(2)
    prefix = f"transformer.resblocks.{n}."
    for name, ldm in _OPEN_LAYER.items():
        if rest.startswith(name + "."):
            return KeySource(prefix + ldm + rest[len(name) :])
    if rest.startswith("self_attn."):
        proj, _, param = rest[len("self_attn.") :].partition(".")
        if proj in _QKV and param in ("weight", "bias"):
            return KeySource(f"{prefix}attn.in_proj_{param}", "chunk3", _QKV[proj])
    raise KeyError(key)


def open_clip_key_map(target_keys: Iterable[str]) -> KeyMap:
    """Map transformers CLIP keys to OpenCLIP-layout checkpoint keys."""
    return {k: open_clip_source(k) for k in target_keys}
