"""Arithmetic over named columns: how a mapped dataset's target or reference
is made of what the file holds (``true_pt / raw_pt``, ``e_em + e_had``).

Only numbers, names, ``+ - * /``, unary minus and parentheses: enough for a
ratio or a sum, and nothing a file's author could turn into code. A name
that is not a Python identifier (an HDF5 path such as ``jets/pt``) is
written in backticks: ``\u0060jets/pt\u0060 / raw``.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from hepprune.core.errors import ConfigError

_QUOTED = re.compile(r"`([^`]+)`")
_OPS: dict[type, Callable[[object, object], object]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


@dataclass(frozen=True)
class Expression:
    """A parsed expression: ``names`` it reads, evaluated on arrays by :meth:`__call__`."""

    text: str
    tree: ast.expr = field(compare=False)  # ast nodes compare by identity; the text says it all
    aliases: tuple[tuple[str, str], ...] = field(compare=False)  # placeholder identifier -> quoted name

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        real = dict(self.aliases)
        seen = [real.get(n.id, n.id) for n in ast.walk(self.tree) if isinstance(n, ast.Name)]
        return tuple(dict.fromkeys(seen))

    @property
    def is_name(self) -> bool:
        return isinstance(self.tree, ast.Name)

    def __call__(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        real = dict(self.aliases)
        if isinstance(self.tree, ast.Name):  # a plain column: no arithmetic, no copy
            return columns[real.get(self.tree.id, self.tree.id)]

        def walk(node: ast.expr) -> object:
            if isinstance(node, ast.Name):  # in float64: integer columns would wrap around (uint32 3 - 5)
                return np.asarray(columns[real.get(node.id, node.id)], dtype=np.float64)
            if isinstance(node, ast.Constant):
                return node.value
            if isinstance(node, ast.UnaryOp):
                value = walk(node.operand)
                return -value if isinstance(node.op, ast.USub) else value  # type: ignore[operator]
            assert isinstance(node, ast.BinOp)
            return _OPS[type(node.op)](walk(node.left), walk(node.right))

        with np.errstate(divide="ignore", invalid="ignore"):  # a 0 denominator gives Inf, refused as non-finite
            return np.asarray(walk(self.tree), dtype=np.float64)


def parse(text: str, key: str) -> Expression:
    """Parse ``text``; a one-line ConfigError naming ``key`` if it is not an expression we evaluate."""
    aliases: dict[str, str] = {}

    def alias(m: re.Match[str]) -> str:
        name = f"_q{len(aliases)}_"
        aliases[name] = m.group(1)
        return name

    source = _QUOTED.sub(alias, text.strip())
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError:
        raise ConfigError(f"{key}: cannot read {text!r} as an expression; use column names, numbers, + - * / "
                          "and parentheses (quote other names in backticks: `jets/pt`)") from None
    for node in ast.walk(tree):
        ok = (isinstance(node, (ast.Name, ast.BinOp, ast.UnaryOp, ast.Load)) or type(node) in _OPS
              or isinstance(node, (ast.USub, ast.UAdd))
              or (isinstance(node, ast.Constant) and type(node.value) in (int, float)))
        if not ok:
            raise ConfigError(f"{key}: {text!r} uses {type(node).__name__.lower()}, which is not allowed; "
                              "use column names, numbers, + - * / and parentheses")
    return Expression(text.strip(), tree, tuple(aliases.items()))
