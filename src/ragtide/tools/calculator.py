"""Safe arithmetic: an AST walker over numbers and ``+ - * / // % **`` (no ``eval``).

Only number literals, the binary operators above, unary ``+``/``-`` and parentheses are
accepted; names, calls, attributes, subscripts, comparisons and everything else are
refused before anything is computed. Sizes are bounded before each operation runs, so
``9**9**9`` or ``10**10**10`` is refused at once instead of eating the CPU and memory:
an integer may have at most ``MAX_BITS`` bits, an exponent at most ``MAX_EXPONENT``,
floats must stay finite, and the expression text and its tree are capped.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

__all__ = [
    "MAX_BITS",
    "MAX_EXPONENT",
    "MAX_EXPRESSION_CHARS",
    "CalculatorError",
    "evaluate",
    "format_number",
]

MAX_EXPRESSION_CHARS = 200
MAX_NODES = 100
MAX_BITS = 1024  # about 308 decimal digits
MAX_EXPONENT = 1024

Number = int | float


class CalculatorError(ValueError):
    """The expression is not plain arithmetic, or its result would be out of bounds."""


_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def evaluate(expression: str) -> Number:
    """The value of ``expression``; ``CalculatorError`` says why one is refused."""
    if not isinstance(expression, str) or not expression.strip():
        raise CalculatorError("the expression is empty")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise CalculatorError("the expression is not valid arithmetic") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError("the expression is too complex")
    try:
        return _eval(tree.body)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except (OverflowError, MemoryError):
        raise CalculatorError("the result is too large") from None
    except RecursionError:
        raise CalculatorError("the expression is too complex") from None


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CalculatorError(f"only numbers are allowed, not {type(value).__name__}")
        return _checked(value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _eval(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        _precheck(node.op, left, right)
        result = _BINARY[type(node.op)](left, right)
        if isinstance(result, complex):  # (-8) ** 0.5
            raise CalculatorError("the result is not a real number")
        return _checked(result)
    if isinstance(node, ast.Name | ast.Call | ast.Attribute | ast.Subscript):
        raise CalculatorError("names and function calls are not allowed")
    if isinstance(node, ast.BinOp):
        raise CalculatorError("only + - * / // % ** are allowed")
    raise CalculatorError(f"{type(node).__name__} is not allowed in arithmetic")


def _precheck(op: ast.operator, left: Number, right: Number) -> None:
    """Refuse an operation whose result would be too large, before computing it."""
    if isinstance(op, ast.Pow):
        if abs(right) > MAX_EXPONENT:
            if isinstance(left, int) and abs(left) <= 1 and isinstance(right, int):
                return  # 1 ** n, 0 ** n, (-1) ** n stay small
            raise CalculatorError(f"exponents are limited to ±{MAX_EXPONENT}")
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            if abs(left).bit_length() * right > MAX_BITS + right:
                raise CalculatorError("the result is too large")
    elif isinstance(op, ast.Mult) and isinstance(left, int) and isinstance(right, int):
        if abs(left).bit_length() + abs(right).bit_length() > MAX_BITS + 1:
            raise CalculatorError("the result is too large")


def _checked(value: Number) -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("the result is too large")
    if isinstance(value, int) and abs(value).bit_length() > MAX_BITS:
        raise CalculatorError("the result is too large")
    return value


def format_number(value: Number) -> str:
    """An int as is; a float with up to 15 significant digits (``0.1 + 0.2`` → 0.3)."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".15g")
