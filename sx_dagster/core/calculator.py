"""A safe calculator for GSM8K calculator annotations ``<<lhs=rhs>>``.

The reference code ran ``eval()`` on model text. Here ``lhs`` is parsed with :mod:`ast` and
only numbers, ``+ - * / **``, unary minus and parentheses are allowed, with bounded operand
size, exponent and nesting, so any string returns quickly and nothing is executed.
"""

from __future__ import annotations

import ast
import operator
import re

ANNOTATION = re.compile(r"<<([^<>=]{0,400})=([^<>]{0,100})>>")
TOLERANCE = 1e-3  # as in the reference RFT filter
MAX_EXPR_CHARS = 400
MAX_ABS = 1e15
MAX_EXPONENT = 64
MAX_NODES = 200

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


class UnsafeExpression(ValueError):
    """The expression is not plain bounded arithmetic."""


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        value = float(node.value)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _eval(node.operand)
        value = -inner if isinstance(node.op, ast.USub) else inner
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT or abs(left) > 1e6):
            raise UnsafeExpression("exponent out of bounds")
        if isinstance(node.op, ast.Div) and right == 0:
            raise UnsafeExpression("division by zero")
        try:
            value = _BINOPS[type(node.op)](left, right)
        except (OverflowError, ZeroDivisionError) as e:
            raise UnsafeExpression(str(e)) from None
        if isinstance(value, complex):
            raise UnsafeExpression("complex result")
    else:
        raise UnsafeExpression(f"disallowed syntax: {type(node).__name__}")
    if value != value or abs(value) > MAX_ABS:
        raise UnsafeExpression("value out of bounds")
    return value


def safe_arith(expr: str) -> float:
    """Value of a plain arithmetic expression; raises :class:`UnsafeExpression` otherwise."""
    if not isinstance(expr, str) or len(expr) > MAX_EXPR_CHARS:
        raise UnsafeExpression("expression too long")
    # Thousands separators ("1,000") and GSM8K's "x" for multiplication are not Python.
    cleaned = re.sub(r"(?<=\d),(?=\d{3}\b)", "", expr).replace("$", "").replace("x", "*").strip()
    if not re.fullmatch(r"[0-9.+\-*/() eE]*", cleaned) or not cleaned:
        raise UnsafeExpression("disallowed characters")
    try:
        tree = ast.parse(cleaned, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise UnsafeExpression(f"unparsable: {type(e).__name__}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise UnsafeExpression("expression too large")
    try:
        return _eval(tree)
    except RecursionError:
        raise UnsafeExpression("nesting too deep") from None


def _number(text: str) -> float | None:
    s = text.strip().rstrip(".").replace(",", "").replace("$", "").replace("%", "")
    if not re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)", s):
        return None
    value = float(s)
    return value if abs(value) <= MAX_ABS else None


def check_annotations(text: str) -> bool:
    """True when every ``<<lhs=rhs>>`` annotation in ``text`` is arithmetically right.

    ``lhs`` must evaluate (safely) to ``rhs`` within an absolute tolerance of 1e-3, the
    reference's rule for RFT data. Text without annotations passes. Unparsable or unsafe
    annotations fail. Never raises.
    """
    if not isinstance(text, str):
        return False
    if "<<" not in text:
        return True
    opened = text.count("<<")
    found = 0
    for m in ANNOTATION.finditer(text):
        found += 1
        rhs = _number(m.group(2))
        if rhs is None:
            return False
        try:
            lhs = safe_arith(m.group(1))
        except UnsafeExpression:
            return False
        if abs(lhs - rhs) > TOLERANCE:
            return False
    # An opened annotation that does not parse as <<lhs=rhs>> is malformed.
    return found == opened


def check_plain_equations(text: str) -> bool:
    """True when every plain ``a op b = c`` equation in ``text`` is arithmetically right: the
    synthetic task's analogue of GSM8K's calculator annotations (its rationales write them
    inline). Not for MATH, where ``3x-2 = 7`` is algebra, not arithmetic. Never raises."""
    if not isinstance(text, str):
        return False
    for m in _PLAIN_EQUATION.finditer(text[:100_000]):
        lhs_text, _, rhs_text = m.group(0).rpartition("=")
        rhs = _number(rhs_text)
        if rhs is None:
            return False
        try:
            lhs = safe_arith(lhs_text.replace("x", "*").replace("×", "*"))
        except UnsafeExpression:
            return False
        if abs(lhs - rhs) > TOLERANCE:
            return False
    return True


def equations(text: str) -> tuple[str, ...]:
    """The equation list of a rationale, whitespace removed: GSM8K annotations when present,
    otherwise plain ``a op b = c`` equations (the synthetic task writes those)."""
    if not isinstance(text, str):
        return ()
    found = [f"{a}={b}" for a, b in ANNOTATION.findall(text)]
    if not found:
        found = [m.group(0) for m in _PLAIN_EQUATION.finditer(text[:100_000])]
    return tuple(re.sub(r"\s+", "", e) for e in found)


_PLAIN_EQUATION = re.compile(r"-?\d+(?:\.\d+)?(?:\s*[-+*/x×]\s*-?\d+(?:\.\d+)?)+\s*=\s*-?\d+(?:\.\d+)?")
