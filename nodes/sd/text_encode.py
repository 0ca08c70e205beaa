"""Prompt -> conditioning tensors, with weights, embeddings and prompts longer than 77 tokens.

A prompt is parsed into weighted segments (``nodes.clip.prompt_weights``), tokenized
without special tokens, and cut into chunks of 75 tokens; each chunk becomes
``<|startoftext|> tokens <|endoftext|> padding`` (77 ids) and is encoded on its own; the
chunk outputs are concatenated along the token axis, so a 100-token prompt gives a
``[1, 154, D]`` tensor. Weights follow ComfyUI: a token's vector is moved away from the
empty prompt's vector at that position, ``z = z_empty + (z - z_empty) * weight``.

``embedding:NAME`` words insert a textual-inversion embedding (``nodes.clip.embeddings``):
its N vectors take N token positions, in place of token-embedding lookups, and count
toward the 75-token chunks like any token (an embedding may straddle two chunks). The
encoder is still called with ``input_ids`` (a placeholder id at those positions, so the
pooled output still finds the end token); a forward hook on its token-embedding layer puts
the vectors in, only for that call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch

from nodes.clip.embeddings import Embedding, load_embedding
from nodes.clip.prompt_weights import embedding_names, parse_prompt_weights, split_embeddings
from nodes.sd.handles import ClipHandle

CHUNK = 75  # tokens per chunk, between the start and end tokens
BOS, EOS = 49406, 49407
PAD_IDS = {"hf": EOS, "open_clip": 0}
PLACEHOLDER = 0  # id written where an embedding vector goes; never the end token

# A token is a vocabulary id or an embedding vector [D].
Token = int | torch.Tensor


def tokenize_weighted(tokenizer, text: str,
                      embeddings: Mapping[str, torch.Tensor | None] | None = None) -> list[tuple[Token, float]]:
    """``[(token id or vector, weight)]`` for a prompt, without start/end tokens.

    ``embeddings`` maps an embedding name to its ``[N, D]`` vectors for this encoder; a name
    mapped to None (or absent) is left out. Without ``embeddings``, ``embedding:NAME`` is text.
    """
    tokens: list[tuple[Token, float]] = []
    for segment, weight in parse_prompt_weights(text):
        pieces = split_embeddings(segment) if embeddings is not None else [(segment, False)]
        for piece, is_embedding in pieces:
            if is_embedding:
                vectors = embeddings.get(piece)
                if vectors is not None:
                    tokens.extend((vector, weight) for vector in vectors)
                continue
            ids = tokenizer(piece, add_special_tokens=False, truncation=False)["input_ids"]
            tokens.extend((token, weight) for token in ids)
    return tokens


def chunk_tokens(tokens: Sequence[tuple[Token, float]], pad_id: int) -> list[tuple[list[Token], list[float]]]:
    """Cuts weighted tokens into 77-token chunks: start, up to 75 tokens, end, padding."""
    chunks = []
    for start in range(0, max(len(tokens), 1), CHUNK):
        part = tokens[start:start + CHUNK]
        ids = [BOS] + [t for t, _ in part] + [EOS]
        weights = [1.0] + [w for _, w in part] + [1.0]
        padding = CHUNK + 2 - len(ids)
        chunks.append((ids + [pad_id] * padding, weights + [1.0] * padding))
    return chunks


def _ids_and_vectors(rows: Sequence[Sequence[Token]]) -> tuple[list[list[int]], dict[tuple[int, int], torch.Tensor]]:
    """Splits token rows into plain ids (vectors replaced by the placeholder) and the vectors by position."""
    ids, vectors = [], {}
    for r, row in enumerate(rows):
        ids.append([token if isinstance(token, int) else PLACEHOLDER for token in row])
        vectors.update({(r, c): token for c, token in enumerate(row) if not isinstance(token, int)})
    return ids, vectors


@contextlib.contextmanager
def _inserted_vectors(encoder, input_ids: torch.Tensor,
                      vectors: Mapping[tuple[int, int], torch.Tensor]) -> Iterator[None]:
    """While active, the encoder's token embedding of ``input_ids`` returns ``vectors`` at
    their ``(row, column)`` positions. Calls on other inputs meanwhile are left untouched."""
    if not vectors:
        yield
        return
    rows = torch.tensor([r for r, _ in vectors])
    cols = torch.tensor([c for _, c in vectors])
    stacked = torch.stack(list(vectors.values()))

    def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not args or args[0].data_ptr() != input_ids.data_ptr() or output.shape[:2] != input_ids.shape:
            return None
        output = output.clone()
        output[rows.to(output.device), cols.to(output.device)] = stacked.to(output.device, output.dtype)
        return output

    handle = encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


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


def _encoder_width(encoder) -> int:
    return int(encoder.get_input_embeddings().weight.shape[-1])


def load_prompt_embeddings(clip: ClipHandle, text: str,
                           folders: Sequence[Path]) -> dict[str, Embedding | None]:
    """Every embedding the prompt names, loaded for this CLIP's encoders (None: left out, warned)."""
    widths = [_encoder_width(encoder) for encoder in clip.encoders]
    return {name: load_embedding(folders, name, clip.family, widths) for name in embedding_names(text)}


def encode_prompt(clip: ClipHandle, text: str, embedding_folders: Sequence[Path] | None = None,
                  texts: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encodes a prompt: ``(cond [1, 77 * chunks, D], pooled [1, P] or None)``, float32 on CPU.

    ``D`` is the text width (SDXL: both encoders' widths concatenated); ``pooled`` is the
    projected end-token embedding of the last encoder that has one (SDXL's OpenCLIP bigG),
    taken from the first chunk. ``texts``: one prompt per encoder instead of ``text`` for all
    (CLIPTextEncodeSDXL's ``text_l`` and ``text_g``); an encoder whose prompt needs fewer
    77-token chunks gets the empty prompt's chunk appended until the counts match, as in
    ComfyUI. ``embedding_folders`` (default: the handle's) are searched for
    ``embedding:NAME`` files; names not found are left out with a logged warning.
    """
    texts = list(texts) if texts is not None else [text] * len(clip.encoders)
    if len(texts) != len(clip.encoders):
        raise ValueError(f"{len(texts)} prompts for {len(clip.encoders)} text encoders")
    folders = tuple(clip.embedding_folders if embedding_folders is None else embedding_folders)
    embeddings = load_prompt_embeddings(clip, " ".join(texts), folders)
    per_encoder, empty_chunks = [], []
    pooled_first: torch.Tensor | None = None
    for index, (encoder, tokenizer, layout, prompt) in enumerate(
            zip(clip.encoders, clip.tokenizers, clip.layouts, texts, strict=True)):
        pad_id = PAD_IDS[layout]
        vectors = {name: e.vectors[index] if e is not None else None for name, e in embeddings.items()}
        chunks = chunk_tokens(tokenize_weighted(tokenizer, prompt, vectors), pad_id)
        rows, inserted = _ids_and_vectors([c[0] for c in chunks])
        weights = torch.tensor([c[1] for c in chunks], dtype=torch.float32)
        rows.append([BOS, EOS] + [pad_id] * CHUNK)  # the empty prompt, for weights
        ids = torch.tensor(rows, device=clip.device)
        with _inserted_vectors(encoder, ids, inserted):
            hidden, pooled = _hidden_state(encoder, clip.family, ids, clip.stop_at_layer)
        hidden = hidden.float().cpu()
        z, z_empty = hidden[:-1], hidden[-1:]
        if bool((weights != 1.0).any()):
            z = z_empty + (z - z_empty) * weights.unsqueeze(-1)
        per_encoder.append(z)
        empty_chunks.append(z_empty)
        if pooled is not None:
            pooled_first = pooled[:1].float().cpu()
    count = max(z.shape[0] for z in per_encoder)
    padded = [torch.cat([z, empty.expand(count - z.shape[0], -1, -1)]) for z, empty in zip(per_encoder, empty_chunks, strict=True)]
    return torch.cat([z.reshape(1, -1, z.shape[-1]) for z in padded], dim=-1), pooled_first
