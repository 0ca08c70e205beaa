"""ComfyMathExpression: ComfyUI's expressions give Python's results, and the evaluator
refuses everything outside its allow-list, quickly and with a node error."""

from __future__ import annotations

import math
import time

import pytest

from nodes.math_expression import MAX_EXPRESSION_CHARS, evaluate, parse_expression
from tests.utility_support import captured, make_registry, run

# Expressions found in ComfyUI's workflow templates, with inputs; Python gives the truth.
TEMPLATE_EXPRESSIONS = [
    "(a % 4 == 1) and ((b - 1) % 4 == 0)", "(a + b) / 2000", "(a // 32) * 32", "(b - c) * (a - 1)",
    "4 * ceil((a - b * c + c - 1) / 4) + 1", "a % b if b > 0 else 0", "a & -8", "a & ~1", "a * b + 1",
    "a > 2048", "a/2", "b if b > 0 else a", "ceil(1.5 * log2(max(a, b))) + 2", "floor (a * b + 1)",
    "max(((a + 15) // 16) * 16, 256)", "max(4, (int(a) // 16) * 16)", "min(abs(b), 16) * a",
    "max(5, round(a * 24)) + (5 - (max(5, round(a * 24)) % 17)) % 17", "round (a * 24)", "min(a,b)",
]


def python_truth(expression: str, names: dict) -> object:
    # The reference is Python itself, on trusted test text only.
    scope = dict(names, ceil=math.ceil, floor=math.floor, log2=math.log2)
    return eval(expression, {"__builtins__": {"max": max, "min": min, "abs": abs, "round": round, "int": int}},
                scope)


@pytest.mark.parametrize("expression", TEMPLATE_EXPRESSIONS)
@pytest.mark.parametrize("names", [{"a": 1033, "b": 5, "c": 3}, {"a": 7, "b": -4, "c": 2}])
def test_template_expressions_match_python(expression, names):
    assert evaluate(parse_expression(expression), names) == python_truth(expression, names)


def test_values_list_and_variadic_functions():
    names = {"a": 2, "b": 3.5, "c": -1, "values": [2, 3.5, -1]}
    assert evaluate(parse_expression("sum(values)"), names) == 4.5
    assert evaluate(parse_expression("sum(a, b, c)"), names) == 4.5
    assert evaluate(parse_expression("max(values) - min(values)"), names) == 4.5
    assert evaluate(parse_expression("pow(a, 10) + sqrt(16) + pi * 0"), names) == 1028.0


@pytest.mark.parametrize("expression", [
    "a.__class__", "().__class__.__bases__", "__import__('os')", "open('x')", "eval('1')",
    "(lambda: 1)()", "[x for x in values]", "values[0]", "'text'", "b'x'", "a if a else 'x'",
    "max(values, key=abs)", "max(*values)", "getattr(a, 'real')", "a := 3", "{1: 2}", "{1, 2}",
    "1j", "f'{a}'", "",
])
def test_refused_constructs(expression):
    with pytest.raises(ValueError):
        evaluate(parse_expression(expression), {"a": 1, "values": [1, 2]})


@pytest.mark.parametrize("expression", [
    "9 ** 9 ** 9", "2 ** 100000", "pow(10, 100000)", "10 ** 2000 * 10 ** 2000 * 10 ** 2000",
    "[a] * 1000000000", "a << 100000", "round(5, -1000000000)", "(a * 10) ** 99999",
])
def test_huge_numbers_are_refused_fast(expression):
    start = time.perf_counter()
    with pytest.raises(ValueError):
        evaluate(parse_expression(expression), {"a": 7})
    assert time.perf_counter() - start < 2.0  # 9 ** 9 ** 9 or [a] * 10**9 would take minutes or GBs


def test_size_limits():
    with pytest.raises(ValueError, match="longer than"):
        parse_expression("1+" * (MAX_EXPRESSION_CHARS // 2) + "1")
    with pytest.raises(ValueError, match="too complex"):
        parse_expression("+".join(["a"] * 300))
    with pytest.raises(ValueError):
        parse_expression("(" * 300 + "1" + ")" * 300)


@pytest.mark.parametrize(("expression", "message"), [
    ("a / 0", "ZeroDivisionError"), ("sqrt(-1)", "domain"), ("log(0)", "domain"),
    ("q + 1", "unknown name 'q'"), ("foo(1)", "unknown function"), ("a +", "Invalid expression"),
])
def test_errors_explain_themselves(expression, message):
    with pytest.raises(ValueError, match=message):
        evaluate(parse_expression(expression), {"a": 1})


@pytest.fixture(scope="module")
def registry():
    return make_registry()


def capture(key, source, slot=0):
    return {"class_type": "TestCapture", "inputs": {"value": [source, slot], "key": key}}


def test_node_gives_float_int_and_bool(registry, tmp_path):
    document = {"a": {"class_type": "PrimitiveFloat", "inputs": {"value": 7.5}},
                "b": {"class_type": "PrimitiveInt", "inputs": {"value": 2}},
                "m": {"class_type": "ComfyMathExpression",
                      "inputs": {"expression": "(a - b) * -1", "values.a": ["a", 0], "values.b": ["b", 0]}},
                "f": capture("m.float", "m", 0), "i": capture("m.int", "m", 1), "t": capture("m.bool", "m", 2)}
    result = run(registry, document, tmp_path)
    assert result.status == "success", result.error
    assert captured("m.float") == -5.5 and captured("m.int") == -5 and captured("m.bool") is True


def test_node_error_for_a_bad_expression(registry, tmp_path):
    document = {"a": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
                "m": {"class_type": "ComfyMathExpression",
                      "inputs": {"expression": "a.__class__", "values.a": ["a", 0]}},
                "c": capture("bad", "m", 0)}
    result = run(registry, document, tmp_path)
    assert result.status == "error" and result.error["node_id"] == "m"
    assert "Attribute is not allowed" in result.error["exception_message"]


def test_values_a_is_required(registry):
    from graph import prepare

    checked = prepare({"m": {"class_type": "ComfyMathExpression", "inputs": {"expression": "1"}},
                       "c": capture("none", "m", 0)}, registry)
    assert checked.node_errors["m"]["errors"][0]["details"] == "values.a"


def test_values_may_be_constants_in_an_api_prompt(registry, tmp_path):
    # ComfyUI's API format lets a "FLOAT,INT,BOOLEAN" input hold a number instead of a link.
    document = {"m": {"class_type": "ComfyMathExpression",
                      "inputs": {"expression": "a * b if c else 0", "values.a": 4, "values.b": 2.5, "values.c": True}},
                "c": capture("constants", "m", 0)}
    assert run(registry, document, tmp_path).status == "success" and captured("constants") == 10.0
    from graph import prepare

    document["m"]["inputs"]["values.b"] = "2.5"
    checked = prepare(document, registry)
    (error,) = checked.node_errors["m"]["errors"]
    assert error["type"] == "invalid_input_type" and error["extra_info"]["input_name"] == "values.b"
