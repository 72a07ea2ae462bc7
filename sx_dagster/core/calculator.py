"""A safe calculator for GSM8K calculator annotations ``<<lhs=rhs>>``.

The reference code ran ``eval()`` on model text. Here ``lhs`` is parsed with :mod:`ast` and
only numbers, ``+ - * / // **``, unary minus and parentheses are allowed, with bounded operand
size, exponent and nesting, so nothing is executed. Every function here runs in time linear in
its input and the checks never raise (issue 15): a sample is graded, never crashes a stage.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Iterator
from functools import lru_cache

ANNOTATION = re.compile(r"<<([^<>=]{0,400})=([^<>]{0,100})>>")
TOLERANCE = 1e-3  # as in the reference RFT filter
MAX_EXPR_CHARS = 400
MAX_ABS = 1e15
MAX_EXPONENT = 64
MAX_NODES = 200
# Sampled rationales are a few thousand characters; a longer text cannot be vouched for, so
# the checks fail it rather than spend unbounded time on it.
MAX_TEXT_CHARS = 100_000

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,  # the reference's eval() accepted "//" (REFERENCE.md)
    ast.Pow: operator.pow,
}


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_ARITH_CHARS = re.compile(r"[0-9.+\-*/() eE]*")
_DECIMAL = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")


class UnsafeExpression(ValueError):
    """The expression is not plain bounded arithmetic."""


def _eval(node: ast.AST, budget: list[int]) -> float:
    budget[0] -= 1  # counted here: ast.walk() cost more than the whole evaluation
    if budget[0] < 0:
        raise UnsafeExpression("expression too large")
    if isinstance(node, ast.Expression):
        return _eval(node.body, budget)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        # Bound before float(): float() of a 309-digit int raises OverflowError.
        if not abs(node.value) <= MAX_ABS:
            raise UnsafeExpression("value out of bounds")
        value = float(node.value)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _eval(node.operand, budget)
        value = -inner if isinstance(node.op, ast.USub) else inner
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left, budget), _eval(node.right, budget)
        if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT or abs(left) > 1e6):
            raise UnsafeExpression("exponent out of bounds")
        if isinstance(node.op, (ast.Div, ast.FloorDiv)) and right == 0:
            raise UnsafeExpression("division by zero")
        try:
            value = _BINOPS[type(node.op)](left, right)
        except ArithmeticError as e:
            raise UnsafeExpression(str(e)) from None
        if isinstance(value, complex):
            raise UnsafeExpression("complex result")
    else:
        raise UnsafeExpression(f"disallowed syntax: {type(node).__name__}")
    if not abs(value) <= MAX_ABS:  # also catches nan
        raise UnsafeExpression("value out of bounds")
    return value


def safe_arith(expr: str) -> float:
    """Value of a plain arithmetic expression; raises :class:`UnsafeExpression` otherwise."""
    if not isinstance(expr, str) or len(expr) > MAX_EXPR_CHARS:
        raise UnsafeExpression("expression too long")
    # Thousands separators ("1,000") and GSM8K's "x" for multiplication are not Python.
    cleaned = _THOUSANDS.sub("", expr).replace("$", "").replace("x", "*").strip()
    if not _ARITH_CHARS.fullmatch(cleaned) or not cleaned:
        raise UnsafeExpression("disallowed characters")
    try:
        tree = ast.parse(cleaned, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise UnsafeExpression(f"unparsable: {type(e).__name__}") from None
    try:
        return _eval(tree, [MAX_NODES])
    except RecursionError:
        raise UnsafeExpression("nesting too deep") from None


def _number(text: str) -> float | None:
    s = text.strip().rstrip(".").replace(",", "").replace("$", "").replace("%", "")
    if not _DECIMAL.fullmatch(s):
        return None
    value = float(s)  # a decimal string too large for a float gives inf, never an error
    return value if abs(value) <= MAX_ABS else None


@lru_cache(maxsize=4096)  # the k samples of a question repeat most of their equations
def _holds(lhs_text: str, rhs_text: str) -> bool:
    """``lhs == rhs`` within the reference's tolerance; False when either side is not safe
    bounded arithmetic."""
    rhs = _number(rhs_text)
    if rhs is None:
        return False
    try:
        lhs = safe_arith(lhs_text)
    except UnsafeExpression:
        return False
    return abs(lhs - rhs) <= TOLERANCE


def check_annotations(text: str) -> bool:
    """True when every ``<<lhs=rhs>>`` annotation in ``text`` is arithmetically right.

    ``lhs`` must evaluate (safely) to ``rhs`` within an absolute tolerance of 1e-3, the
    reference's rule for RFT data. Text without annotations passes. Unparsable or unsafe
    annotations fail, and so does text over ``MAX_TEXT_CHARS``. Never raises.
    """
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        return False
    if "<<" not in text:
        return True
    found = 0
    for m in ANNOTATION.finditer(text):
        found += 1
        if not _holds(m.group(1), m.group(2)):
            return False
    # An opened annotation that does not parse as <<lhs=rhs>> is malformed.
    return found == text.count("<<")


def check_plain_equations(text: str) -> bool:
    """True when every plain ``a op b = c`` equation in ``text`` is arithmetically right: the
    synthetic task's analogue of GSM8K's calculator annotations (its rationales write them
    inline). Not for MATH, where ``3x-2 = 7`` is algebra, not arithmetic. Text over
    ``MAX_TEXT_CHARS`` fails. Never raises."""
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        return False
    for eq in _plain_equations(text):
        lhs_text, _, rhs_text = eq.rpartition("=")
        if not _holds(lhs_text.replace("×", "*"), rhs_text):
            return False
    return True


def equations(text: str) -> tuple[str, ...]:
    """The equation list of a rationale, whitespace removed: GSM8K annotations when present,
    otherwise plain ``a op b = c`` equations (the synthetic task writes those). Only the first
    ``MAX_TEXT_CHARS`` characters are read."""
    if not isinstance(text, str):
        return ()
    text = text[:MAX_TEXT_CHARS]
    found = [f"{a}={b}" for a, b in ANNOTATION.findall(text)]
    if not found:
        found = list(_plain_equations(text))
    return tuple(re.sub(r"\s+", "", e) for e in found)


# A plain equation is a chain ``number (op number)+`` followed by ``= number``. Possessive
# quantifiers never backtrack into a digit or whitespace run (giving one back could never
# lead to a match), so each regex call is linear in what it reads.
_NUM = r"-?\d++(?:\.\d++)?"
_CHAIN_START = re.compile(r"-?(?<!\d)\d")  # a number's first digit, or the sign before it
_CHAIN = re.compile(rf"{_NUM}((?:\s*+(?://|[-+*/x×])\s*+{_NUM})*+)")  # "//" as the calculator reads it
_RHS = re.compile(rf"\s*+=\s*+{_NUM}")


def _plain_equations(text: str) -> Iterator[str]:
    """The plain equations of ``text``, left to right, non-overlapping. Linear time: when the
    chain starting at a number is no equation, no later start inside that chain can be one
    (it reads the same chain to the same end), so the scan resumes after it."""
    pos = 0
    while (start := _CHAIN_START.search(text, pos)) is not None:
        chain = _CHAIN.match(text, start.start())
        assert chain is not None  # _CHAIN_START found a number here
        rhs = _RHS.match(text, chain.end()) if chain.group(1) else None
        if rhs is not None:
            yield text[start.start() : rhs.end()]
            pos = rhs.end()
        else:
            pos = chain.end()
