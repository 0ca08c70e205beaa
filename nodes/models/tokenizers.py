"""CLIP tokenizers from the bundled vocabulary (no download, no open-clip at run time).

Every supported encoder uses CLIP's 49408-token BPE vocabulary with ``<|startoftext|>``
(49406) and ``<|endoftext|>`` (49407), sequences of ``model_max_length`` 77 tokens. They
differ only in padding: HF CLIP encoders (SD1.x, SDXL's first) pad with ``<|endoftext|>``,
OpenCLIP encoders (SD2.x, SDXL's second) pad with id 0 (the token ``!``).
"""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPTokenizer

TOKENIZER_DIR = Path(__file__).resolve().parent / "tokenizer"
MAX_LENGTH = 77
PAD_TOKENS = {"hf": "<|endoftext|>", "open_clip": "!"}


def bundled_clip_tokenizer(layout: str = "hf") -> CLIPTokenizer:
    """The bundled CLIP tokenizer padded for ``layout`` (``"hf"``: pad 49407, ``"open_clip"``: pad 0)."""
    if layout not in PAD_TOKENS:
        raise ValueError(f"unknown text encoder layout {layout!r}; expected one of {sorted(PAD_TOKENS)}")
    # Positional: transformers 5 names these ``vocab``/``merges``, 4.x ``vocab_file``/``merges_file``.
    return CLIPTokenizer(
        str(TOKENIZER_DIR / "vocab.json"),
        str(TOKENIZER_DIR / "merges.txt"),
        model_max_length=MAX_LENGTH,
        pad_token=PAD_TOKENS[layout],
    )


def folder_clip_tokenizer(folder: Path, layout: str) -> CLIPTokenizer:
    """A tokenizer from a diffusers ``tokenizer*/`` folder when it has ``vocab.json`` +
    ``merges.txt`` or a ``tokenizer.json``, else the bundled one for ``layout``. Never downloads."""
    has_bpe = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if has_bpe or (folder / "tokenizer.json").is_file():
        tok = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        tok.model_max_length = MAX_LENGTH
        return tok
    return bundled_clip_tokenizer(layout)
