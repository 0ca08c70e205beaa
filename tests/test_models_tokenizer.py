"""The bundled CLIP tokenizer files follow CLIP's recipe and tokenize like CLIP."""

from __future__ import annotations

import json

import pytest

from nodes.models.tokenizers import TOKENIZER_DIR, bundled_clip_tokenizer
from tools.make_clip_tokenizer import MERGE_COUNT, VOCAB_SIZE, build_vocab_and_merges, bytes_to_unicode


def test_vocab_follows_the_recipe():
    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    merges = (TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    assert len(merges) - 1 == MERGE_COUNT
    assert len(vocab) == VOCAB_SIZE
    symbols = bytes_to_unicode()
    assert len(set(symbols)) == 256
    assert vocab[symbols[0]] == 0 and vocab[symbols[255] + "</w>"] == 511
    assert vocab["".join(merges[1].split())] == 512
    assert vocab["".join(merges[-1].split())] == 512 + MERGE_COUNT - 1
    assert (vocab["<|startoftext|>"], vocab["<|endoftext|>"]) == (49406, 49407)


@pytest.mark.parametrize(("layout", "pad_id"), [("hf", 49407), ("open_clip", 0)])
def test_tokenizer_ids_and_padding(layout, pad_id):
    tok = bundled_clip_tokenizer(layout)
    assert tok.model_max_length == 77
    ids = tok("a red circle", padding="max_length", max_length=77, truncation=True).input_ids
    assert ids[:5] == [49406, 320, 736, 7117, 49407]
    assert len(ids) == 77
    assert set(ids[5:]) == {pad_id}


def test_long_prompt_truncated_to_77():
    tok = bundled_clip_tokenizer("hf")
    ids = tok("circle " * 200, truncation=True, max_length=tok.model_max_length).input_ids
    assert len(ids) == 77 and ids[-1] == 49407


def test_unknown_layout_refused():
    with pytest.raises(ValueError):
        bundled_clip_tokenizer("t5")


def test_generator_reproduces_committed_vocab():
    """The tool's recipe, fed the committed merges, rebuilds the committed vocab exactly."""
    merges = (TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    bpe_text = "\n".join(["bpe_simple_vocab_16e6.txt#version: 0.2", *merges, "extra lines past the cut"])
    vocab, rebuilt_merges = build_vocab_and_merges(bpe_text)
    assert rebuilt_merges == merges
    assert vocab == json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
