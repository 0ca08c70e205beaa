"""Prompt -> conditioning tensors, with weights and prompts longer than 77 tokens.

A prompt is parsed into weighted segments (``nodes.clip.prompt_weights``), tokenized
without special tokens, and cut into chunks of 75 tokens; each chunk becomes
``<|startoftext|> tokens <|endoftext|> padding`` (77 ids) and is encoded on its own; the
chunk outputs are concatenated along the token axis, so a 100-token prompt gives a
``[1, 154, D]`` tensor. Weights follow ComfyUI: a token's vector is moved away from the
empty prompt's vector at that position, ``z = z_empty + (z - z_empty) * weight``.
"""

from __future__ import annotations

import torch

from nodes.clip.prompt_weights import parse_prompt_weights
from nodes.sd.handles import ClipHandle

CHUNK = 75  # tokens per chunk, between the start and end tokens
BOS, EOS = 49406, 49407
PAD_IDS = {"hf": EOS, "open_clip": 0}


def tokenize_weighted(tokenizer, text: str) -> list[tuple[int, float]]:
    """``[(token id, weight)]`` for a prompt, without start/end tokens."""
    tokens: list[tuple[int, float]] = []
    for segment, weight in parse_prompt_weights(text):
        ids = tokenizer(segment, add_special_tokens=False, truncation=False)["input_ids"]
        tokens.extend((token, weight) for token in ids)
    return tokens


def chunk_tokens(tokens: list[tuple[int, float]], pad_id: int) -> list[tuple[list[int], list[float]]]:
    """Cuts weighted tokens into 77-id chunks: start, up to 75 tokens, end, padding."""
    chunks = []
    for start in range(0, max(len(tokens), 1), CHUNK):
        part = tokens[start:start + CHUNK]
        ids = [BOS] + [t for t, _ in part] + [EOS]
        weights = [1.0] + [w for _, w in part] + [1.0]
        padding = CHUNK + 2 - len(ids)
        chunks.append((ids + [pad_id] * padding, weights + [1.0] * padding))
    return chunks


def _hidden_state(encoder, family: str, input_ids: torch.Tensor, stop_at_layer: int):
    """The per-token output an SD family conditions on, and the pooled projection if any.

    SD1/SD2 take the chosen layer through the final layer norm (the last layer by default;
    SD2 checkpoints already end at OpenCLIP's penultimate block). SDXL takes the
    penultimate layer of both encoders without the final norm, as it was trained.
    """
    out = encoder(input_ids=input_ids, output_hidden_states=True)
    pooled = getattr(out, "text_embeds", None)
    if family == "sdxl":
        layer = min(stop_at_layer, -2)
        return out.hidden_states[layer], pooled
    if stop_at_layer == -1:
        return out.last_hidden_state, pooled
    hidden = out.hidden_states[stop_at_layer]
    # transformers 5 keeps the final norm on the model itself; 4.x under ``text_model``.
    final_norm = getattr(encoder, "final_layer_norm", None) or encoder.text_model.final_layer_norm
    return final_norm(hidden), pooled


def encode_prompt(clip: ClipHandle, text: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encodes a prompt: ``(cond [1, 77 * chunks, D], pooled [1, P] or None)``, float32 on CPU.

    ``D`` is the text width (SDXL: both encoders' widths concatenated); ``pooled`` is the
    projected end-token embedding of the last encoder that has one (SDXL's OpenCLIP bigG),
    taken from the first chunk.
    """
    per_encoder = []
    pooled_first: torch.Tensor | None = None
    for encoder, tokenizer, layout in zip(clip.encoders, clip.tokenizers, clip.layouts, strict=True):
        pad_id = PAD_IDS[layout]
        chunks = chunk_tokens(tokenize_weighted(tokenizer, text), pad_id)
        ids = torch.tensor([c[0] for c in chunks], device=clip.device)
        weights = torch.tensor([c[1] for c in chunks], dtype=torch.float32)
        empty = torch.tensor([[BOS, EOS] + [pad_id] * CHUNK], device=clip.device)
        hidden, pooled = _hidden_state(encoder, clip.family, torch.cat([ids, empty]), clip.stop_at_layer)
        hidden = hidden.float().cpu()
        z, z_empty = hidden[:-1], hidden[-1:]
        if bool((weights != 1.0).any()):
            z = z_empty + (z - z_empty) * weights.unsqueeze(-1)
        per_encoder.append(z.reshape(1, -1, z.shape[-1]))
        if pooled is not None:
            pooled_first = pooled[:1].float().cpu()
    return torch.cat(per_encoder, dim=-1), pooled_first
