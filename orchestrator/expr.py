"""Tiny safe expressions for sweep ``constraints`` and ``best --where``: ``n_layers >= 12 and width % n_heads == 0``.

Allowed: numbers, strings, names (``width``), dotted names (``model.disc_width``), arithmetic
(``+ - * / // % **``), comparisons (chains allowed), ``and``/``or``/``not``, and a comma meaning ``and``.
Nothing else is evaluated (no calls, no attribute access on objects), so user text cannot run code.
"""

from __future__ import annotations

import ast
import operator
from typing import Any

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
        src = self.text.replace("&&", " and ").replace("||", " or ")
        try:
            tree = ast.parse(src, mode="eval").body
        except SyntaxError as e:
            raise ExprError(f"cannot parse {text!r}: {e.msg}") from None
        self.tree = ast.BoolOp(op=ast.And(), values=list(tree.elts)) if isinstance(tree, ast.Tuple) else tree
        self.names: set[str] = set()
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
        try:
            return self._eval(self.tree, env)
        except (TypeError, ZeroDivisionError) as e:
            raise ExprError(f"{self.text!r}: {e}") from None

    def _eval(self, node: ast.AST, env: dict[str, Any]) -> Any:
        name = _dotted(node)
        if name is not None:
            if name not in env:
                raise ExprError(f"{self.text!r}: {name} has no value here")
            return env[name]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BinOp):
            return _BIN[type(node.op)](self._eval(node.left, env), self._eval(node.right, env))
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
