"""Rules between chapter parameters and estimates of a run's cost, written in the
``parameters`` cell as comment lines and parsed once, when a chapter is read.

A rule is ``# rule: EXPRESSION: why``; estimates are ``# memory: EXPRESSION`` (bytes) and
``# time: EXPRESSION`` (seconds), one line per experiment, the lines of a kind added up::

    # rule: m >= d_x: X Xᵀ must be invertible
    # memory: 24 * (d_x + d_y) * m + gd_bytes(max(depths), max(d_x, width, d_y))
    # time: len(depths) * gd_seconds(steps, max(depths), max(d_x, width, d_y))

Expressions use the parameter names, numbers, strings, arithmetic, comparisons,
``and``/``or``/``not`` and the functions ``min``, ``max``, ``len``, ``sum``, ``abs``,
:func:`gd_seconds` and :func:`gd_bytes`; any other syntax or name is refused when the chapter
is read. Rules are checked with the ranges (:func:`dlnbook.ranges.check_ranges`); a run whose
memory estimate exceeds the machine's physical memory or whose time estimate exceeds
:data:`MAX_SECONDS` is refused by :func:`check_resources`.
"""

from __future__ import annotations

import ast
import io
import math
import os
import re
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dlnbook.ranges import ChapterError, show

if TYPE_CHECKING:
    from dlnbook.chapters import Chapter

__all__ = [
    "MAX_SECONDS",
    "Estimate",
    "Rule",
    "check_resources",
    "gd_bytes",
    "gd_seconds",
    "machine_memory",
    "parse_checks",
]

MAX_SECONDS = 24 * 3600.0
"""Longest estimated run time (seconds) accepted without ``--allow-large``."""


def gd_seconds(steps: float, depth: float, width: float, starts: float = 1) -> float:
    """Estimated seconds of batched gradient descent on one core.

    A step costs ``3 N`` matrix products (covariance form, prefix and suffix products);
    each costs about 1 µs of call overhead plus ``2 starts width^3`` flops at
    50 GFLOP/s (the rates measured by ``benchmarks/bench_gd.py``, see README).

    Parameters
    ----------
    steps, depth, width, starts : float
        Iterations, depth ``N``, largest width, batch size.

    Returns
    -------
    float
    """
    return steps * 3 * depth * (1e-6 + 2 * starts * width**3 / 5e10)


def gd_bytes(depth: float, width: float, starts: float = 1) -> float:
    """Estimated bytes of batched gradient descent: about eight ``width × width`` float64
    matrices per factor and start (weights, gradients, prefix and suffix products, the
    covariances, temporaries)."""
    return 8 * 8 * starts * depth * width**2


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "len": len,
    "sum": sum,
    "abs": abs,
    "gd_seconds": gd_seconds,
    "gd_bytes": gd_bytes,
}
_NODES = tuple(
    getattr(ast, name)
    for name in (
        "Expression Compare BoolOp BinOp UnaryOp Name Constant Call Tuple List Load And Or Not "
        "USub UAdd Add Sub Mult Div FloorDiv Mod Pow Eq NotEq Lt LtE Gt GtE In NotIn"
    ).split()
)


def _compile(text: str, names: set[str]) -> tuple[Any, tuple[str, ...]]:
    """Compile a rule or estimate expression after checking that it uses only the allowed
    syntax, the chapter's parameter names and the allowed functions; also return the
    parameter names it uses."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ChapterError(f"cannot read expression {text.strip()!r}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise ChapterError(
                f"expression {text.strip()!r} uses {type(node).__name__}, which is not allowed"
            )
        if isinstance(node, ast.Call) and (
            not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords
        ):
            raise ChapterError(
                f"expression {text.strip()!r}: only {', '.join(_FUNCTIONS)} may be called "
                "(positional arguments)"
            )
        if isinstance(node, ast.Name) and node.id not in names | set(_FUNCTIONS):
            raise ChapterError(f"expression {text.strip()!r} names unknown parameter {node.id!r}")
    used = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(_FUNCTIONS))
    return compile(tree, "<parameters cell>", "eval"), tuple(used)


def _evaluate(code: Any, text: str, params: Mapping[str, Any]) -> Any:
    """Evaluate a compiled expression (its AST was checked by :func:`_compile`)."""
    try:
        return eval(code, {"__builtins__": {}}, {**_FUNCTIONS, **params})
    except (ArithmeticError, TypeError, ValueError) as exc:
        raise ChapterError(f"cannot evaluate {text!r}: {exc}") from None


@dataclass(frozen=True)
class Rule:
    """A condition between parameters, ``# rule: EXPRESSION: why``.

    Attributes
    ----------
    expression : str
        Python expression over the parameters that must be true.
    reason : str
        Why, shown when the rule fails.
    """

    expression: str
    reason: str
    names: tuple[str, ...] = field(repr=False, compare=False)
    code: Any = field(repr=False, compare=False)

    def problem(self, params: Mapping[str, Any]) -> str | None:
        """Why the rule fails for ``params``, or None if it holds."""
        if _evaluate(self.code, self.expression, params):
            return None
        values = ", ".join(f"{name} = {show(params[name], 30)}" for name in self.names)
        return f"needs {self.expression} ({self.reason}), got {values}"


@dataclass(frozen=True)
class Estimate:
    """Estimated cost of a run: the sum of the chapter's ``# memory:`` lines (bytes) or of
    its ``# time:`` lines (seconds), one line per experiment.

    Attributes
    ----------
    kind : str
        ``"memory"`` or ``"time"``.
    expressions : tuple of str
        Python expressions over the parameters, added up.
    """

    kind: str
    expressions: tuple[str, ...]
    codes: tuple[Any, ...] = field(repr=False, compare=False)

    def value(self, params: Mapping[str, Any]) -> float:
        """The estimate for ``params`` (bytes or seconds)."""
        pairs = zip(self.codes, self.expressions, strict=True)
        total = sum(_evaluate(code, text, params) for code, text in pairs)
        try:
            return float(total)
        except OverflowError:  # an integer beyond float range
            return math.inf

    def __str__(self) -> str:
        return " + ".join(self.expressions)


_CHECK_LINE = re.compile(r"#\s*(rule|memory|time)\s*:(.*)$")


def _split_reason(text: str) -> tuple[str, str]:
    """Split ``EXPRESSION: why`` at the first ``:`` outside a string."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.OP and tok.string == ":":
                return text[: tok.start[1]].strip(), text[tok.end[1] :].strip()
    except (tokenize.TokenError, SyntaxError):
        pass
    return text.strip(), ""


def parse_checks(
    source: str, names: set[str], where: str = "parameters cell"
) -> tuple[tuple[Rule, ...], tuple[Estimate, ...]]:
    """Read the ``# rule:``, ``# memory:`` and ``# time:`` lines of a parameters cell.

    Parameters
    ----------
    source : str
        Source of the cell.
    names : set of str
        The parameter names declared in the cell.
    where : str
        Description of the cell for error messages.

    Returns
    -------
    rules : tuple of Rule
    estimates : tuple of Estimate
        At most one per kind (its lines added up).

    Raises
    ------
    ChapterError
        If a line cannot be read or names an unknown parameter.
    """
    rules: list[Rule] = []
    estimates: dict[str, list[tuple[str, Any]]] = {}
    for lineno, line in enumerate(source.splitlines(), start=1):
        match = _CHECK_LINE.fullmatch(line.strip())
        if not match:
            continue
        kind, text = match.groups()
        try:
            if kind == "rule":
                expression, reason = _split_reason(text)
                if not reason:
                    raise ChapterError("expected '# rule: EXPRESSION: why'")
                code, used = _compile(expression, names)
                rules.append(Rule(expression, reason, used, code))
            else:
                estimates.setdefault(kind, []).append((text.strip(), _compile(text, names)[0]))
        except ChapterError as exc:
            raise ChapterError(f"{where}, line {lineno}: {exc}") from None
    summed = (Estimate(k, *map(tuple, zip(*lines, strict=True))) for k, lines in estimates.items())
    return tuple(rules), tuple(summed)


def machine_memory() -> float:
    """Physical memory of this machine in bytes (``inf`` where it cannot be read)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def _human(kind: str, amount: float) -> str:
    """Bytes as GB or TB, seconds as s or h, three significant digits (no exponent)."""
    if kind == "memory":
        value, unit = (amount / 1e12, "TB") if amount >= 1e12 else (amount / 1e9, "GB")
    else:
        value, unit = (amount / 3600, "h") if amount >= 3600 else (amount, "s")
    if not math.isfinite(value):
        return f"{value} {unit}"
    return f"{value:.3g} {unit}" if value < 1000 else f"{value:,.0f} {unit}"


def check_resources(chapter: Chapter, params: Mapping[str, Any]) -> None:
    """Refuse parameters whose estimated memory exceeds the machine's physical memory or
    whose estimated time exceeds :data:`MAX_SECONDS`.

    Parameters
    ----------
    chapter : Chapter
        The chapter whose ``parameters`` cell declares the estimates.
    params : mapping
        Effective parameters that passed :func:`check_ranges`.

    Raises
    ------
    ChapterError
        Naming the estimate, its expression and the limit.
    """
    limits = {
        "memory": (machine_memory(), "this machine has"),
        "time": (MAX_SECONDS, "the limit is"),
    }
    for estimate in chapter.estimates:
        amount = estimate.value(params)
        limit, what = limits[estimate.kind]
        if not amount <= limit:
            need = "take" if estimate.kind == "time" else "need"
            raise ChapterError(
                f"chapter {chapter.name!r} would {need} an estimated "
                f"{_human(estimate.kind, amount)} ({estimate.kind}: {estimate}); {what} "
                f"{_human(estimate.kind, limit)}; pass --allow-large to run it anyway"
            )
