"""Prompt weighting syntax: ``(word:1.2)``, ``(word)``, ``[word]`` and escapes.

The syntax shared by ComfyUI and A1111-style prompts:
  - ``(text)`` multiplies the weight of ``text`` by 1.1; ``[text]`` divides it by 1.1;
  - ``(text:1.5)`` multiplies it by 1.5; groups nest and their factors multiply;
  - ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\:`` are literal characters;
  - an unclosed group runs to the end of the prompt; a stray closing bracket is literal.
"""

from __future__ import annotations

import re

EMPHASIS = 1.1
_WEIGHT = re.compile(r":\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*$")


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
