"""Allowed ranges of chapter parameters, in brackets at the end of each parameter's comment.

The ranges are parsed once, when a chapter is read (:func:`dlnbook.chapters.load_chapter`)::

    noise = 0.2  # noise level of the targets [>= 0, <= 10]
    depths = [1, 2, 3]  # depths N [1..20, len 1..8]
    widths = [8, 4, 8]  # widths d_0, ..., d_N [chain, <= 500]
    init = "orthogonal"  # initial factors ['orthogonal' | 'gaussian']

Comma-separated items: a bound on the number, or on every entry of a list (``> x``,
``>= x``, ``< x``, ``<= x``, or ``a..b`` for ``>= a, <= b``); a bound on the length of a
list (``len >= k``, ``len <= k``, ``len j..k``); ``chain`` (network widths
``[d_0, ..., d_N]``: at least two integers ``>= 1``, ``N + 1`` entries if the chapter has a
``depth`` parameter, ``d_0 = d_x`` and ``d_N = d_y`` if it has those); or the allowed
strings (``'a' | 'b'``). A parameter without brackets accepts any value of its type.

Checks run before a chapter executes, in this order: types and finiteness
(:func:`dlnbook.chapters.effective_parameters`), ranges and the rules between parameters
(:func:`check_ranges`; rules: :mod:`dlnbook.rules`), then the cost estimates
(:func:`dlnbook.rules.check_resources`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlnbook.chapters import Chapter, Parameter

__all__ = ["ChapterError", "Range", "check_ranges", "meaning_without_range", "parse_range", "show"]


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
