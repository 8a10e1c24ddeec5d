"""Tiny safe expressions for sweep ``constraints`` and ``best --where``: ``n_layers >= 12 and width % n_heads == 0``.

Allowed: numbers, strings, names (``width``), dotted names (``model.disc_width``), arithmetic
(``+ - * / // % **``), comparisons (chains allowed), ``and``/``or``/``not``, and a comma meaning ``and``.
Nothing else is evaluated (no calls, no attribute access on objects), so user text cannot run code.

Evaluation is also bounded, so a sweep file cannot hang the planner: the text is at most ``MAX_TEXT``
characters, an integer result may have at most ``MAX_INT_BITS`` bits (``9 ** 9 ** 9 ** 9`` is refused before it
is computed), a string result at most ``MAX_STR`` characters (``"a" * 10 ** 9``), and one evaluation may take at
most ``MAX_SECONDS``. What exceeds a bound raises ``ExprError`` naming the expression and the bound.
"""

from __future__ import annotations

import ast
import math
import operator
import time
from typing import Any

MAX_TEXT = 2000  # characters of one expression
MAX_INT_BITS = 4096  # bits of any integer an expression computes (about 1233 decimal digits)
MAX_STR = 10_000  # characters of any string an expression computes
MAX_SECONDS = 1.0  # wall time of one evaluation

_BIN = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMP = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


class ExprError(ValueError):
    pass


def _bits(v: Any) -> float:
    """log2 of the magnitude of a number (0 for 0 and for non-numbers), without computing anything big."""
    if isinstance(v, bool) or not isinstance(v, int | float) or v == 0:
        return 0.0
    return math.log2(abs(v)) if math.isfinite(v) else 0.0  # math.log2 takes ints of any size


def _guard(op: type, left: Any, right: Any, text: str) -> None:
    """Refuse an operation whose result would exceed the bounds, before computing it."""

    def too_big(what: str) -> ExprError:
        return ExprError(f"{text!r}: {what} exceeds the expression bound; use smaller numbers")

    if op is ast.Pow and isinstance(left, int | float) and isinstance(right, int | float):
        if isinstance(left, bool) or isinstance(right, bool):
            return
        if right > 0 and abs(left) > 1 and _bits(left) * right > MAX_INT_BITS:
            raise too_big(f"{left!r} ** {right!r} (over {MAX_INT_BITS} bits)")
        if right < 0 and isinstance(left, int) and isinstance(right, int) and -right > MAX_INT_BITS:
            raise too_big(f"{left!r} ** {right!r}")
    elif op is ast.Mult:
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str) and isinstance(n, int) and len(seq) * max(n, 0) > MAX_STR:
                raise too_big(f"a string of {len(seq)} x {n} characters (over {MAX_STR})")
        if isinstance(left, int) and isinstance(right, int) and _bits(left) + _bits(right) > MAX_INT_BITS:
            raise too_big(f"a product of over {MAX_INT_BITS} bits")
    elif op is ast.Mod and isinstance(left, str):
        raise ExprError(f"{text!r}: % on a string (formatting) is not allowed")
    elif op is ast.Add and isinstance(left, str) and isinstance(right, str):
        if len(left) + len(right) > MAX_STR:
            raise too_big(f"a string of over {MAX_STR} characters")


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


class Expr:
    """A parsed expression; ``names`` lists every (dotted) name it reads."""

    def __init__(self, text: str):
        self.text = text.strip()
        if not self.text:
            raise ExprError("empty expression")
        if len(self.text) > MAX_TEXT:
            raise ExprError(
                f"{self.text[:60]!r}...: {len(self.text)} characters, over the bound of {MAX_TEXT}"
            )
        src = self.text.replace("&&", " and ").replace("||", " or ")
        try:
            tree = ast.parse(src, mode="eval").body
        except SyntaxError as e:
            raise ExprError(f"cannot parse {text!r}: {e.msg}") from None
        self.tree = ast.BoolOp(op=ast.And(), values=list(tree.elts)) if isinstance(tree, ast.Tuple) else tree
        self.names: set[str] = set()
        self._deadline = 0.0
        self._check(self.tree)

    def _check(self, node: ast.AST) -> None:
        name = _dotted(node)
        if name is not None:
            self.names.add(name)
            return
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool):
            return
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            self._check(node.left)
            self._check(node.right)
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub | ast.UAdd):
            self._check(node.operand)
            return
        if isinstance(node, ast.Compare) and all(type(o) in _CMP for o in node.ops):
            self._check(node.left)
            for c in node.comparators:
                self._check(c)
            return
        if isinstance(node, ast.BoolOp):
            for v in node.values:
                self._check(v)
            return
        raise ExprError(
            f"{self.text!r}: {type(node).__name__} is not allowed "
            "(use names, numbers, + - * / // % **, comparisons, and/or/not)"
        )

    def check_names(self, known: set[str] | list[str]) -> None:
        unknown = sorted(self.names - set(known))
        if unknown:
            raise ExprError(
                f"{self.text!r}: unknown name {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )

    def __call__(self, env: dict[str, Any]) -> Any:
        self._deadline = time.monotonic() + MAX_SECONDS
        try:
            return self._eval(self.tree, env)
        except (TypeError, ZeroDivisionError, OverflowError, ValueError) as e:
            if isinstance(e, ExprError):
                raise
            raise ExprError(f"{self.text!r}: {e}") from None

    def _eval(self, node: ast.AST, env: dict[str, Any]) -> Any:
        if time.monotonic() > self._deadline:
            raise ExprError(f"{self.text!r}: evaluation took over {MAX_SECONDS:g} s")
        name = _dotted(node)
        if name is not None:
            if name not in env:
                raise ExprError(f"{self.text!r}: {name} has no value here")
            return env[name]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, env), self._eval(node.right, env)
            _guard(type(node.op), left, right, self.text)
            return _BIN[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, env)
            return (not v) if isinstance(node.op, ast.Not) else (-v if isinstance(node.op, ast.USub) else +v)
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, env)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comp, env)
                if left is None or right is None or not _CMP[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BoolOp):
            vals = (self._eval(v, env) for v in node.values)
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        raise ExprError(f"{self.text!r}: cannot evaluate {type(node).__name__}")  # pragma: no cover
