"""What a ``parameters`` cell declares besides values: ranges (``[>= 0, <= 10]``,
``[1..20, len 1..8]``, ``[chain]``, ``['a' | 'b']``), ``# rule:``, ``# memory:`` and
``# time:`` lines (syntax: ``chapters/README.md``).
"""

from __future__ import annotations

import ast
import io
import math
import operator
import os
import re
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

__all__ = ["ChapterError", "Estimate", "Range", "Rule", "parse_checks", "parse_range"]
__all__ += ["MAX_SECONDS", "gd_bytes", "gd_seconds", "human", "machine_memory", "show", "split_at"]

#: Longest estimated run time (seconds) accepted without ``--allow-large``.
MAX_SECONDS = 24 * 3600.0


class ChapterError(ValueError):
    """A chapter, its parameters cell or a parameter value is not acceptable (exit 2)."""


def show(value: Any, limit: int = 60) -> str:
    """``repr`` of a value for a one-line message, shortened."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_NUMBER = r"[-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BOUND = re.compile(rf"(>=|<=|>|<)\s*({_NUMBER})")
_INTERVAL = re.compile(rf"({_NUMBER})\s*\.\.\s*({_NUMBER})")


def _fmt(number: float) -> str:
    if float(number).is_integer() and abs(number) < 1e5:
        return str(int(number))
    return f"{number:g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def _describe(bounds: tuple[tuple[str, float], ...], prefix: str) -> list[str]:
    items, rest = [], list(bounds)
    while rest:
        (op, limit), rest = rest[0], rest[1:]
        if op == ">=" and rest and rest[0][0] == "<=":
            items.append(f"{prefix}{_fmt(limit)}..{_fmt(rest[0][1])}")
            rest = rest[1:]
        else:
            items.append(f"{prefix}{op} {_fmt(limit)}")
    return items


def _leaves(value: Any) -> list[Any]:
    return [x for v in value for x in _leaves(v)] if isinstance(value, list | tuple) else [value]


@dataclass(frozen=True)
class Range:
    """Allowed values: ``bounds`` on the number (every entry of a list), ``length`` of a
    list, ``chain`` (network widths ``[d_0, ..., d_N]``), allowed strings ``choices``."""

    bounds: tuple[tuple[str, float], ...] = ()
    length: tuple[tuple[str, int], ...] = ()
    chain: bool = False
    choices: tuple[str, ...] = ()

    def __str__(self) -> str:  # as ``dln-book list`` shows it: ``a..b`` for ``>= a, <= b``
        items = [" | ".join(map(repr, self.choices))] if self.choices else []
        items += ["chain"] * self.chain + _describe(self.bounds, "")
        return ", ".join(items + _describe(self.length, "len "))

    def problem(self, value: Any, params: Mapping[str, Any]) -> str | None:
        """Why ``value`` is outside the range (``params``: the other values), or None."""
        if isinstance(value, list | tuple):
            for op, limit in self.length:
                if not _OPS[op](len(value), limit):
                    return f"must have len {op} {limit}, got {show(value)}"
        if self.choices:  # for a list: every entry
            if any(v not in self.choices for v in _leaves(value)):
                return f"must be one of {', '.join(map(repr, self.choices))}, got {show(value)}"
            return None
        if self.chain and (problem := _chain_problem(value, params)):
            return f"{problem} (widths must chain)"
        for number in _leaves(value) if self.bounds else ():
            if not isinstance(number, Real) or isinstance(number, bool):
                return f"expects numbers, got {show(value)}"
            for op, limit in self.bounds:
                if not _OPS[op](number, limit):
                    return f"must be {op} {_fmt(limit)}, got {show(value)}"
        return None


def parse_range(meaning: str) -> Range | None:
    """The range bracket ending a parameter's comment, or None (a bracket that does not
    start like a range, as ``[d_0, ..., d_N]``, is part of the meaning)."""
    match = re.search(r"\[([^\[\]]*)\]\s*$", meaning)
    inside = match.group(1).strip() if match else ""
    if not inside.startswith((">", "<", "=", "chain", "len", "'")) and not _INTERVAL.match(inside):
        return None
    bounds, length, chain, choices = [], [], False, ()
    for item in (part.strip() for part in inside.split(",")):
        if item == "chain":
            chain = True
        elif m := _BOUND.fullmatch(item):
            bounds.append((m[1], float(m[2].replace("_", ""))))
        elif m := _INTERVAL.fullmatch(item):
            low, high = (float(g.replace("_", "")) for g in m.groups())
            bounds += [(">=", low), ("<=", high)]
        elif m := re.fullmatch(r"len\s*(>=|<=|>|<)\s*(\d+)", item):
            length.append((m[1], int(m[2])))
        elif m := re.fullmatch(r"len\s+(\d+)\s*\.\.\s*(\d+)", item):
            length += [(">=", int(m[1])), ("<=", int(m[2]))]
        elif re.fullmatch(r"'[^']*'(\s*\|\s*'[^']*')*", item):
            choices = tuple(c.strip()[1:-1] for c in item.split("|"))
        else:
            raise ChapterError(
                f"cannot read range item {item!r} in [{inside}] (use '>= x', '> x', '<= x', "
                "'< x', 'a..b', 'len >= k', 'len <= k', 'len j..k', 'chain' or \"'a' | 'b'\")"
            )
    return Range(tuple(bounds), tuple(length), chain, choices)


def _chain_problem(value: Any, params: Mapping[str, Any]) -> str | None:
    if not isinstance(value, list | tuple):
        return f"must be a list of widths [d_0, ..., d_N], got {show(value)}"
    if value and all(isinstance(v, list | tuple) for v in value):
        return next(filter(None, (_chain_problem(item, params) for item in value)), None)
    if len(value) < 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return f"must list at least two integer widths [d_0, ..., d_N], got {show(value)}"
    if min(value) < 1:
        return f"needs every width >= 1, got {show(value)}"
    depth = params.get("depth")
    if isinstance(depth, int) and len(value) != depth + 1:
        return f"needs depth + 1 = {depth + 1} widths for depth {depth}, got {show(value)}"
    for end, other in ((0, "d_x"), (-1, "d_y")):
        if isinstance(params.get(other), int) and value[end] != params[other]:
            where = "start" if end == 0 else "end"
            return f"must {where} with {other} = {params[other]}, got {show(value)}"
    return None


def gd_seconds(steps: float, depth: float, width: float, starts: float = 1) -> float:
    """Seconds of ``steps`` batched GD steps on one core: ``3 depth`` products a step, each
    1 µs plus ``2 starts width^3`` flops at 50 GFLOP/s (``benchmarks/bench_gd.py``)."""
    return steps * 3 * depth * (1e-6 + 2 * starts * width**3 / 5e10)


def gd_bytes(depth: float, width: float, starts: float = 1) -> float:
    """Bytes of batched GD: eight ``width × width`` float64 matrices per factor and start."""
    return 8 * 8 * starts * depth * width**2


_FUNCTIONS = {f.__name__: f for f in (min, max, len, sum, abs, gd_seconds, gd_bytes)}
_NODES = tuple(
    getattr(ast, name)
    for name in (
        "Expression Compare BoolOp BinOp UnaryOp Name Constant Call Tuple List Load And Or Not "
        "USub UAdd Add Sub Mult Div FloorDiv Mod Pow Eq NotEq Lt LtE Gt GtE In NotIn"
    ).split()
)


@dataclass(frozen=True)
class _Expression:
    """An expression over the parameters, checked when the chapter is read."""

    text: str
    code: Any = field(repr=False, compare=False)
    names: tuple[str, ...] = field(repr=False, compare=False)

    @classmethod
    def compile(cls, text: str, names: set[str]) -> _Expression:
        text = text.strip()
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError:
            raise ChapterError(f"cannot read expression {text!r}") from None
        for node in ast.walk(tree):
            if not isinstance(node, _NODES):
                raise ChapterError(
                    f"expression {text!r} uses {type(node).__name__}, which is not allowed"
                )
            if isinstance(node, ast.Call) and (
                not isinstance(node.func, ast.Name)
                or node.func.id not in _FUNCTIONS
                or node.keywords
            ):
                raise ChapterError(
                    f"expression {text!r}: only {', '.join(_FUNCTIONS)} may be called "
                    "(positional arguments)"
                )
            if isinstance(node, ast.Name) and node.id not in names | set(_FUNCTIONS):
                raise ChapterError(f"expression {text!r} names unknown parameter {node.id!r}")
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(_FUNCTIONS)
        return cls(text, compile(tree, "<parameters cell>", "eval"), tuple(sorted(used)))

    def __call__(self, params: Mapping[str, Any]) -> Any:
        try:
            return eval(self.code, {"__builtins__": {}}, {**_FUNCTIONS, **params})
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise ChapterError(f"cannot evaluate {self.text!r}: {exc}") from None


@dataclass(frozen=True)
class Rule:
    """``# rule: EXPRESSION: why``."""

    condition: _Expression
    reason: str

    @property
    def expression(self) -> str:  # as written
        return self.condition.text

    def problem(self, params: Mapping[str, Any]) -> str | None:
        if self.condition(params):
            return None
        values = ", ".join(f"{n} = {show(params[n], 30)}" for n in self.condition.names)
        return f"needs {self.expression} ({self.reason}), got {values}"


@dataclass(frozen=True)
class Estimate:
    """The sum of the ``# memory:`` (bytes) or ``# time:`` (seconds) lines."""

    kind: str
    terms: tuple[_Expression, ...]

    def value(self, params: Mapping[str, Any]) -> float:
        try:
            return float(sum(term(params) for term in self.terms))
        except OverflowError:
            return math.inf

    def __str__(self) -> str:
        return " + ".join(term.text for term in self.terms)


def split_at(text: str, token: str) -> tuple[str, str]:
    """Python source split at its first ``token`` (``"#"``: the comment) outside strings,
    without the token's first character; ``(text, "")`` if none."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.string == token or (token == "#" and tok.type == tokenize.COMMENT):
                return text[: tok.start[1]], text[tok.start[1] + 1 :]
    except (tokenize.TokenError, SyntaxError):
        pass
    return text, ""


def parse_checks(
    source: str, names: set[str], where: str = "parameters cell"
) -> tuple[tuple[Rule, ...], tuple[Estimate, ...]]:
    """The rules and estimates (one per kind) of a parameters cell declaring ``names``."""
    rules: list[Rule] = []
    terms: dict[str, list[_Expression]] = {}
    for lineno, line in enumerate(source.splitlines(), start=1):
        match = re.fullmatch(r"#\s*(rule|memory|time)\s*:(.*)", line.strip())
        try:
            if match and match[1] == "rule":
                expression, reason = (part.strip() for part in split_at(match[2], ":"))
                if not reason:
                    raise ChapterError("expected '# rule: EXPRESSION: why'")
                rules.append(Rule(_Expression.compile(expression, names), reason))
            elif match:
                terms.setdefault(match[1], []).append(_Expression.compile(match[2], names))
        except ChapterError as exc:
            raise ChapterError(f"{where}, line {lineno}: {exc}") from None
    return tuple(rules), tuple(Estimate(kind, tuple(t)) for kind, t in terms.items())


def machine_memory() -> float:
    """Physical memory in bytes."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def human(kind: str, amount: float) -> str:
    """Bytes (``kind`` ``"memory"``) as ``1.5 GB``; seconds as ``42 s``, ``5 min``, ``1.5 h``."""
    if kind == "memory":
        value, unit = (amount / 1e12, "TB") if amount >= 1e12 else (amount / 1e9, "GB")
    elif amount < 5400:
        return f"{amount:.0f} s" if amount < 90 else f"{amount / 60:.0f} min"
    else:
        value, unit = amount / 3600, "h"
    if not math.isfinite(value):
        return f"{value} {unit}"
    return f"{value:.3g} {unit}" if value < 1000 else f"{value:,.0f} {unit}"
