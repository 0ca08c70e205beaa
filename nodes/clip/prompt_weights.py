"""Prompt weighting syntax: ``(word:1.2)``, ``(word)``, ``[word]`` and escapes.

The syntax shared by ComfyUI and A1111-style prompts:
  - ``(text)`` multiplies the weight of ``text`` by 1.1; ``[text]`` divides it by 1.1;
  - ``(text:1.5)`` multiplies it by 1.5; groups nest and their factors multiply;
  - ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\:`` are literal characters;
  - an unclosed group runs to the end of the prompt; a stray closing bracket is literal;
  - ``embedding:NAME`` (a whitespace-separated word) inserts a textual-inversion embedding's
    vectors; ``(embedding:NAME:1.2)`` weights them. Trailing commas are not part of NAME.
"""

from __future__ import annotations

import re

EMPHASIS = 1.1
_WEIGHT = re.compile(r":\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*$")
EMBEDDING_PREFIX = "embedding:"
# ComfyUI splits prompt text on spaces and newlines; a word starting with the prefix is an embedding.
_EMBEDDING_WORD = re.compile(r"(?<!\S)" + re.escape(EMBEDDING_PREFIX) + r"(\S+)")


def parse_prompt_weights(prompt: str) -> list[tuple[str, float]]:
    """Splits a prompt into ``(text, weight)`` segments, merging neighbours of equal weight.

    >>> parse_prompt_weights("a (red:1.5) [circle] on blue")
    [('a ', 1.0), ('red', 1.5), (' ', 1.0), ('circle', 0.9090909090909091), (' on blue', 1.0)]
    """
    segments: list[tuple[str, float]] = []
    # Each open group: (its closing bracket, index into segments where it starts).
    stack: list[tuple[str, int]] = []
    text: list[str] = []

    def flush() -> None:
        if text:
            segments.append(("".join(text), 1.0))
            text.clear()

    i = 0
    while i < len(prompt):
        char = prompt[i]
        if char == "\\" and i + 1 < len(prompt) and prompt[i + 1] in "()[]:\\":
            text.append(prompt[i + 1])
            i += 2
            continue
        if char in "([":
            flush()
            stack.append((")" if char == "(" else "]", len(segments)))
        elif char in ")]" and stack and stack[-1][0] == char:
            flush()
            _, start = stack.pop()
            factor = EMPHASIS if char == ")" else 1 / EMPHASIS
            if char == ")":
                factor = _explicit_weight(segments, start) or factor
            segments[start:] = [(t, w * factor) for t, w in segments[start:]]
        else:
            text.append(char)
        i += 1
    flush()
    for _, start in reversed(stack):  # unclosed groups run to the end
        segments[start:] = [(t, w * EMPHASIS) for t, w in segments[start:]]
    return _merge([(t, w) for t, w in segments if t])


def _explicit_weight(segments: list[tuple[str, float]], start: int) -> float | None:
    """Takes a trailing ``:1.5`` off the last segment of a group and returns 1.5."""
    if len(segments) <= start:
        return None
    last_text, last_weight = segments[-1]
    match = _WEIGHT.search(last_text)
    if match is None:
        return None
    segments[-1] = (last_text[: match.start()], last_weight)
    return float(match.group(1))


def _merge(segments: list[tuple[str, float]]) -> list[tuple[str, float]]:
    merged: list[tuple[str, float]] = []
    for text, weight in segments:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + text, weight)
        else:
            merged.append((text, weight))
    return merged


def split_embeddings(text: str) -> list[tuple[str, bool]]:
    """Splits prompt text into plain text and embedding references: ``[(text or NAME, is_embedding)]``.

    >>> split_embeddings("a embedding:cat, smiling")
    [('a ', False), ('cat', True), (', smiling', False)]
    """
    pieces: list[tuple[str, bool]] = []
    position = 0
    for match in _EMBEDDING_WORD.finditer(text):
        name = match.group(1).rstrip(",")
        if not name:
            continue
        if match.start() > position:
            pieces.append((text[position:match.start()], False))
        pieces.append((name, True))
        position = match.start(1) + len(name)
    if position < len(text):
        pieces.append((text[position:], False))
    return pieces


def embedding_names(prompt: str) -> list[str]:
    """The embedding names a prompt refers to, each once, in order of appearance."""
    names: dict[str, None] = {}
    if EMBEDDING_PREFIX in prompt:
        for segment, _ in parse_prompt_weights(prompt):
            names.update((name, None) for name, is_embedding in split_embeddings(segment) if is_embedding)
    return list(names)
