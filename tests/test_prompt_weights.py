"""Prompt weighting syntax."""

import pytest

from nodes.clip.prompt_weights import parse_prompt_weights


@pytest.mark.parametrize("prompt, expected", [
    ("a red circle", [("a red circle", 1.0)]),
    ("a (red) circle", [("a ", 1.0), ("red", 1.1), (" circle", 1.0)]),
    ("a ((red)) circle", [("a ", 1.0), ("red", pytest.approx(1.21)), (" circle", 1.0)]),
    ("a [red] circle", [("a ", 1.0), ("red", pytest.approx(1 / 1.1)), (" circle", 1.0)]),
    ("(red:1.5) circle", [("red", 1.5), (" circle", 1.0)]),
    ("(red: 0.25)", [("red", 0.25)]),
    ("((red:2) circle:0.5)", [("red", 1.0), (" circle", 0.5)]),
    (r"a \(literal\) \[x\]", [("a (literal) [x]", 1.0)]),
    ("ratio 16:9", [("ratio 16:9", 1.0)]),
    ("(time 10:30)", [("time 10", 30.0)]),
    ("(open to the end", [("open to the end", pytest.approx(1.1))]),
    ("stray) bracket]", [("stray) bracket]", 1.0)]),
    ("(a)(a)", [("aa", pytest.approx(1.1))]),
    ("", []),
])
def test_weights(prompt, expected):
    assert parse_prompt_weights(prompt) == expected
