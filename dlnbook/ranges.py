"""Allowed values of chapter parameters, written in the ``parameters`` cell itself.

Three kinds of declarations, all parsed once, when a chapter is read
(:func:`dlnbook.chapters.load_chapter`):

**Ranges**, in brackets at the end of a parameter's comment::

    noise = 0.2  # noise level of the targets [>= 0, <= 10]
    depths = [1, 2, 3]  # depths N [1..20, len 1..8]
    widths = [8, 4, 8]  # widths d_0, ..., d_N [chain, <= 500]
    init = "orthogonal"  # initial factors ['orthogonal' | 'gaussian']

Comma-separated items: a bound on the number, or on every entry of a list (``> x``,
``>= x``, ``< x``, ``<= x``, or ``a..b`` for ``>= a, <= b``); a bound on the length of a
list (``len >= k``, ``len <= k``, ``len j..k``); ``chain`` (network widths
``[d_0, ..., d_N]``: at least two integers ``>= 1``, ``N + 1`` entries if the chapter has a
``depth`` parameter, ``d_0 = d_x`` and ``d_N = d_y`` if it has those); or the allowed
strings (``'a' | 'b'``). A parameter
without brackets accepts any value of its type.

**Rules** between parameters, one comment line each, ``# rule: EXPRESSION: why``::

    # rule: m >= d_x: X Xᵀ must be invertible
    # rule: eta_min < eta_max: the grid runs from eta_min up to eta_max

**Estimates** of what a run costs in bytes and seconds, one comment line per experiment;
the lines of a kind are added up::

    # memory: gd_bytes(max(depths), max(d_x, width, d_y)) + 24 * (d_x + d_y) * m
    # time: len(depths) * gd_seconds(steps, max(depths), max(d_x, width, d_y))
    # time: min(d_x, d_y) * gd_seconds(bottleneck_steps, 2, max(d_x, d_y), bottleneck_starts)

Expressions use the parameter names, numbers, strings, arithmetic, comparisons,
``and``/``or``/``not`` and the functions ``min``, ``max``, ``len``, ``sum``, ``abs``,
``gd_seconds`` and ``gd_bytes`` (the cost model of :func:`gd_seconds`, :func:`gd_bytes`).

Checks run before a chapter executes, in this order: types and finiteness
(:func:`dlnbook.chapters.effective_parameters`), ranges and rules (:func:`check_ranges`),
then the estimates (:func:`check_resources`), which are refused above the machine's
memory or :data:`MAX_SECONDS` unless the user allows large runs.
"""

from __future__ import annotations

import ast
import io
import math
import operator
import os
import re
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlnbook.chapters import Chapter, Parameter

__all__ = [
    "MAX_SECONDS",
    "ChapterError",
    "Estimate",
    "Range",
    "Rule",
    "check_ranges",
    "check_resources",
    "gd_bytes",
    "gd_seconds",
    "machine_memory",
    "meaning_without_range",
    "parse_checks",
    "parse_range",
    "show",
]

MAX_SECONDS = 24 * 3600.0
"""Longest estimated run time (seconds) accepted without ``--allow-large``."""


class ChapterError(ValueError):
    """A chapter notebook, its parameters cell or a parameter value is not acceptable.

    Defined here, the lowest module of :mod:`dlnbook`; :mod:`dlnbook.chapters` re-exports it.
    """


# --- ranges ----------------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
_ANNOTATION = re.compile(r"\[([^\[\]]*)\]\s*$")
_NUMBER = r"[-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BOUND = re.compile(rf"(>=|<=|>|<)\s*({_NUMBER})")
_LENGTH = re.compile(r"len\s*(>=|<=|>|<)\s*(\d+)")
_INTERVAL = re.compile(rf"({_NUMBER})\s*\.\.\s*({_NUMBER})")
_LENGTHS = re.compile(r"len\s+(\d+)\s*\.\.\s*(\d+)")
_CHOICE = re.compile(r"'[^']*'")


def show(value: Any, limit: int = 60) -> str:
    """``repr`` of a value for a one-line message, shortened when it is long."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}... ({len(text)} characters)"


def _fmt(number: float) -> str:
    """A bound as written: ``3``, ``0.5``, ``1e6``."""
    if float(number).is_integer() and abs(number) < 1e5:
        return str(int(number))
    return f"{number:g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def _describe(bounds: tuple[tuple[str, float], ...], prefix: str) -> list[str]:
    """Bounds as written in brackets: ``a..b`` for ``>= a`` followed by ``<= b``."""
    items, rest = [], list(bounds)
    while rest:
        (op, limit), rest = rest[0], rest[1:]
        if op == ">=" and rest and rest[0][0] == "<=":
            items.append(f"{prefix}{_fmt(limit)}..{_fmt(rest[0][1])}")
            rest = rest[1:]
        else:
            items.append(f"{prefix}{op} {_fmt(limit)}")
    return items


@dataclass(frozen=True)
class Range:
    """Allowed values of one parameter (see the module docs for the bracket syntax).

    Attributes
    ----------
    bounds : tuple of (str, float)
        Comparisons the number, or every entry of the list, must pass.
    length : tuple of (str, int)
        Comparisons the length of a list must pass.
    chain : bool
        Whether the value must be network widths ``[d_0, ..., d_N]``.
    choices : tuple of str
        Allowed strings (empty: any).
    """

    bounds: tuple[tuple[str, float], ...] = ()
    length: tuple[tuple[str, int], ...] = ()
    chain: bool = False
    choices: tuple[str, ...] = ()

    def __str__(self) -> str:
        items = [" | ".join(repr(c) for c in self.choices)] if self.choices else []
        items += ["chain"] if self.chain else []
        items += _describe(self.bounds, "")
        items += _describe(self.length, "len ")
        return ", ".join(items)

    def problem(self, value: Any, params: Mapping[str, Any]) -> str | None:
        """Why ``value`` is outside the range (``params``: the other values), or None."""
        if self.choices:
            if value not in self.choices:
                return f"must be one of {', '.join(map(repr, self.choices))}, got {show(value)}"
            return None
        if isinstance(value, list | tuple):
            for op, limit in self.length:
                if not _OPS[op](len(value), limit):
                    return f"must have len {op} {limit}, got {show(value)}"
        if self.chain:
            problem = _chain_problem(value, params)
            if problem:
                return f"{problem} (widths must chain)"
        for number in _leaves(value):
            if not isinstance(number, Real) or isinstance(number, bool):
                return f"expects numbers, got {show(value)}"
            for op, limit in self.bounds:
                if not _OPS[op](number, limit):
                    return f"must be {op} {_fmt(limit)}, got {show(value)}"
        return None


def parse_range(meaning: str) -> Range | None:
    """The range in brackets at the end of a parameter's comment.

    Parameters
    ----------
    meaning : str
        The comment after the value, e.g. ``"noise level [>= 0, <= 10]"``.

    Returns
    -------
    Range or None
        None if the comment does not end with a range (a bracket such as
        ``[d_0, ..., d_N]`` that does not start like one is part of the meaning).

    Raises
    ------
    ChapterError
        If the bracket starts like a range but an item cannot be read.
    """
    match = _ANNOTATION.search(meaning)
    first = match.group(1).strip() if match else ""
    if not first.startswith((">", "<", "=", "chain", "len", "'")) and not _INTERVAL.match(first):
        return None  # e.g. "widths [d_0, ..., d_N]" is part of the meaning, not a range
    bounds, length, chain, choices = [], [], False, ()
    for item in (part.strip() for part in match.group(1).split(",")):
        if item == "chain":
            chain = True
        elif bound := _BOUND.fullmatch(item):
            bounds.append((bound.group(1), float(bound.group(2).replace("_", ""))))
        elif size := _LENGTH.fullmatch(item):
            length.append((size.group(1), int(size.group(2))))
        elif interval := _INTERVAL.fullmatch(item):
            low, high = (float(g.replace("_", "")) for g in interval.groups())
            bounds += [(">=", low), ("<=", high)]
        elif sizes := _LENGTHS.fullmatch(item):
            length += [(">=", int(sizes.group(1))), ("<=", int(sizes.group(2)))]
        elif all(_CHOICE.fullmatch(c.strip()) for c in item.split("|")):
            choices = tuple(c.strip()[1:-1] for c in item.split("|"))
        else:
            raise ChapterError(
                f"cannot read range item {item!r} in [{match.group(1)}] (use '>= x', '> x', "
                "'<= x', '< x', 'a..b', 'len >= k', 'len <= k', 'len j..k', 'chain' or "
                "\"'a' | 'b'\")"
            )
    return Range(tuple(bounds), tuple(length), chain, choices)


def meaning_without_range(param: Parameter) -> str:
    """The parameter's one-line meaning, without its trailing range bracket."""
    if param.range is None:
        return param.meaning
    return param.meaning[: param.meaning.rindex("[")].rstrip()


def _leaves(value: Any) -> list[Any]:
    """Every leaf of a (nested) list or tuple."""
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _chain_problem(value: Any, params: Mapping[str, Any]) -> str | None:
    """Why ``value`` is not a chain of widths, or None if it is."""
    if not isinstance(value, list | tuple):
        return f"must be a list of widths [d_0, ..., d_N], got {show(value)}"
    if value and all(isinstance(v, list | tuple) for v in value):
        for item in value:
            problem = _chain_problem(item, params)
            if problem:
                return problem
        return None
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


# --- rules and estimates ---------------------------------------------------------------


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
_NODES = (
    ast.Expression,
    ast.Compare,
    ast.BoolOp,
    ast.BinOp,
    ast.UnaryOp,
    ast.Name,
    ast.Constant,
    ast.Call,
    ast.Tuple,
    ast.List,
    ast.Load,
    ast.And,
    ast.Or,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Pow,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
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


def _evaluate(code: Any, params: Mapping[str, Any]) -> Any:
    return eval(
        code, {"__builtins__": {}}, {**_FUNCTIONS, **params}
    )  # the AST was checked by _compile


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
        if _evaluate(self.code, params):
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
        return float(sum(_evaluate(code, params) for code in self.codes))

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


# --- the checks ------------------------------------------------------------------------


def check_ranges(chapter: Chapter, params: Mapping[str, Any]) -> None:
    """Fail on the first parameter outside its range, then on the first failing rule.

    Parameters
    ----------
    chapter : Chapter
        The chapter whose ``parameters`` cell declares ranges and rules.
    params : mapping
        Effective parameters (from :func:`dlnbook.chapters.effective_parameters`).

    Raises
    ------
    ChapterError
        Naming the chapter, the parameter or rule, and the offending values.
    """
    for param in chapter.parameters:
        value = params.get(param.name)
        if param.range is None or value is None:
            continue
        problem = param.range.problem(value, params)
        if problem:
            raise ChapterError(f"parameter {param.name!r} of chapter {chapter.name!r} {problem}")
    for rule in chapter.rules:
        problem = rule.problem(params)
        if problem:
            raise ChapterError(f"chapter {chapter.name!r} {problem}")


def machine_memory() -> float:
    """Physical memory of this machine in bytes (``inf`` where it cannot be read)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def _human(kind: str, amount: float) -> str:
    if kind == "memory":
        return f"{amount / 1e9:.3g} GB"
    return f"{amount / 3600:.3g} h" if amount >= 3600 else f"{amount:.3g} s"


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
