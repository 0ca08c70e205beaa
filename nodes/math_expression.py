"""ComfyUI's Math Expression node and the small, safe evaluator behind it.

The expression is user text from a workflow, so it is never handed to ``eval``: it is
parsed with ``ast`` and walked by ``evaluate``, which knows an allow-list of node types
(numbers, the input names, arithmetic, bitwise and comparison operators, ``and``/``or``/
``not``, ``x if c else y``, list/tuple literals and calls of a few math functions by
name). Attribute access, subscripts, strings, lambdas, comprehensions and every other
construct are refused. The text, the tree and the numbers are bounded: an integer may not
grow past ``MAX_INT_BITS`` bits and ``**`` refuses exponents that would pass it, so no
expression can take long or much memory. Any problem is a ``ValueError`` (a node error).
"""

from __future__ import annotations

import ast
import math
import operator
import string
from collections.abc import Callable
from typing import Any

from graph import Input, Node, Output

MAX_EXPRESSION_CHARS = 2000
MAX_TREE_NODES = 400
MAX_TREE_DEPTH = 48
MAX_INT_BITS = 4096
MAX_ROUND_DIGITS = 400
MAX_SEQUENCE_ITEMS = 64

VARIABLE_NAMES = tuple(string.ascii_lowercase)  # ComfyUI's input names: values.a .. values.z
VALUE_TYPE = "FLOAT,INT,BOOLEAN"

def _number(value: Any) -> Any:
    # Lists exist only as function arguments (max(values)); arithmetic on them, such as
    # [a] * 10**9, would build huge sequences.
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return value
    raise ValueError(f"expected a number, got {type(value).__name__}")


def _checked_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise ValueError(f"integer result too large (over {MAX_INT_BITS} bits)")
    return value


def _power(base: Any, exponent: Any) -> Any:
    base, exponent = _number(base), _number(exponent)
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        # Refuse before computing: the result has at least (bit_length - 1) * exponent bits.
        if (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
            raise ValueError(f"{base} ** {exponent} is too large")
    if isinstance(exponent, float) and abs(exponent) > MAX_INT_BITS:
        raise ValueError(f"exponent {exponent} is too large")
    result = operator.pow(base, exponent)
    if isinstance(result, complex):
        raise ValueError(f"{base} ** {exponent} is not a real number")
    return result


def _shift(left: bool) -> Callable[[Any, Any], Any]:
    def shift(value: Any, amount: Any) -> Any:
        if not isinstance(amount, int) or abs(amount) > MAX_INT_BITS:
            raise ValueError(f"shift by {amount!r} is out of range")
        return operator.lshift(value, amount) if left else operator.rshift(value, amount)
    return shift


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: _power, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
    ast.BitXor: operator.xor, ast.LShift: _shift(True), ast.RShift: _shift(False),
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_, ast.Invert: operator.invert,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}


def _numbers(args: tuple) -> list:
    """``f(a, b, c)`` or ``f(values)``: the numbers a variadic function works on."""
    items = list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else list(args)
    if not items:
        raise ValueError("needs at least one number")
    return [_number(item) for item in items]


def _round(value: Any, digits: Any = None) -> Any:
    if digits is not None and (not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS):
        raise ValueError(f"round() digits must be an integer of at most {MAX_ROUND_DIGITS}")
    return round(value) if digits is None else round(value, digits)


def _integer(value: Any) -> int:
    if not isinstance(value, (int, float)):
        raise ValueError(f"int() of {type(value).__name__}")
    return int(value)


def _float(value: Any) -> float:
    if not isinstance(value, (int, float)):
        raise ValueError(f"float() of {type(value).__name__}")
    return float(value)


# The functions ComfyUI's expression node offers, and no others.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sum": lambda *args: sum(_numbers(args)),
    "min": lambda *args: min(_numbers(args)),
    "max": lambda *args: max(_numbers(args)),
    "abs": abs,
    "round": _round,
    "pow": _power,
    "sqrt": math.sqrt,
    "ceil": math.ceil,
    "floor": math.floor,
    "log": math.log,
    "log2": math.log2,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "int": _integer,
    "float": _float,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "True": True, "False": False}


def parse_expression(text: str) -> ast.Expression:
    """Parses and checks an expression; raises ValueError for anything not allowed."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("Expression cannot be empty.")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"Expression is longer than {MAX_EXPRESSION_CHARS} characters.")
    try:
        # A multi-line widget may hold surrounding newlines; the expression is one line.
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ValueError(f"Invalid expression {text!r}: {exc}") from None
    _check_tree(tree)
    return tree


_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call,
    ast.Name, ast.Constant, ast.List, ast.Tuple, ast.Load, ast.And, ast.Or,
    *_BINARY, *_UNARY, *_COMPARE,
)


def _check_tree(tree: ast.Expression) -> None:
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_TREE_NODES or depth > MAX_TREE_DEPTH:
            raise ValueError("Expression is too complex.")
        if not isinstance(node, _ALLOWED_NODES):
            raise ValueError(f"{type(node).__name__} is not allowed in an expression.")
        if isinstance(node, ast.Constant) and (isinstance(node.value, complex)
                                               or not isinstance(node.value, (int, float))):
            raise ValueError(f"only numbers may be written in an expression, not {node.value!r}")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                raise ValueError(f"unknown function {ast.unparse(node.func)!r}; known: {', '.join(FUNCTIONS)}")
            if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
                raise ValueError("functions take plain positional arguments only")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def evaluate(tree: ast.Expression, names: dict[str, Any]) -> Any:
    """Evaluates a checked expression with the given variables."""
    try:
        return _evaluate(tree.body, names)
    except ValueError:
        raise
    except (ArithmeticError, TypeError, RecursionError, MemoryError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


def _evaluate(node: ast.AST, names: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in names:
            return names[node.id]
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ValueError(f"unknown name {node.id!r} (connect an input with that letter)")
    if isinstance(node, ast.BinOp):
        left, right = _number(_evaluate(node.left, names)), _number(_evaluate(node.right, names))
        return _checked_int(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp):
        return _checked_int(_UNARY[type(node.op)](_number(_evaluate(node.operand, names))))
    if isinstance(node, ast.BoolOp):
        # Short-circuits and returns an operand, as Python's and/or do.
        result = None
        for value_node in node.values:
            result = _evaluate(value_node, names)
            if bool(result) == isinstance(node.op, ast.Or):
                return result
        return result
    if isinstance(node, ast.Compare):
        left = _number(_evaluate(node.left, names))
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _number(_evaluate(right_node, names))
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        branch = node.body if _evaluate(node.test, names) else node.orelse
        return _evaluate(branch, names)
    if isinstance(node, (ast.List, ast.Tuple)):
        if len(node.elts) > MAX_SEQUENCE_ITEMS:
            raise ValueError("list too long")
        return [_evaluate(item, names) for item in node.elts]
    if isinstance(node, ast.Call):
        args = [_evaluate(arg, names) for arg in node.args]
        return _checked_int(FUNCTIONS[node.func.id](*args))
    raise ValueError(f"{type(node).__name__} is not allowed in an expression.")  # _check_tree refused it


def _declare_values(cls: type[Node]) -> type[Node]:
    """Adds ComfyUI's grown inputs ``values.a`` .. ``values.z``: ``a`` required, the rest
    optional (ComfyUI's Autogrow template with min=1). Their names hold a dot, so they are
    set here rather than written in the class body."""
    for index, letter in enumerate(VARIABLE_NAMES):
        setattr(cls, f"values.{letter}", Input(VALUE_TYPE, optional=index > 0))
    return cls


@_declare_values
class ComfyMathExpression(Node):
    """Evaluates a math expression over the connected inputs ``a`` .. ``z``.

    ``values`` is the list of all of them (``sum(values)``). Gives the result as FLOAT,
    INT (truncated towards zero) and BOOL.
    """

    display_name = "Math Expression"
    category = "math"
    expression = Input("STRING", default="a + b", multiline=True)
    outputs = (Output("FLOAT"), Output("INT"), Output("BOOLEAN", "BOOL"))

    def execute(self, expression: str, **values: Any) -> tuple:
        tree = parse_expression(expression)
        names = {name.removeprefix("values."): value for name, value in values.items()
                 if name.startswith("values.") and value is not None}
        names = {letter: names[letter] for letter in VARIABLE_NAMES if letter in names}
        names["values"] = list(names.values())
        result = evaluate(tree, names)
        if isinstance(result, list) or not isinstance(result, (int, float)):
            raise ValueError(f"Math Expression {expression!r} must give a number, got {type(result).__name__}")
        if isinstance(result, float) and not math.isfinite(result):
            raise ValueError(f"Math Expression {expression!r} gave a non-finite result: {result}")
        return (float(result), int(result), bool(result))
