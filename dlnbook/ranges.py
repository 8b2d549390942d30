"""Allowed ranges of chapter parameters, read from the ``parameters`` cell itself.

A parameter's range comes from a bracket at the end of its comment, if there is one::

    noise = 0.2  # noise level of the targets [>= 0]
    tolerance = 1e-6  # relative excess loss that counts as converged [> 0, < 1]
    widths = [8, 4, 8]  # widths d_0, ..., d_N [chain]

The bracket holds comma-separated items: a bound (``> x``, ``>= x``, ``< x``, ``<= x``) or
``chain``. Without a bracket, the range follows from the words of the name (split at ``_``):

- last word ``steps`` (``steps``, ``base_steps``): ``>= 0``;
- a word ``eta`` or ``etas`` (``eta``, ``eta_max``, ``one_step_etas``) or a name starting
  with ``step_size``: ``> 0``;
- a word ``depth`` or ``depths``, or last word ``width`` or ``dim``: ``>= 1``;
- last word ``widths`` or ``dims``: ``chain``.

Bounds apply to a number or to every number of a list (or nested lists). ``chain`` means
the widths ``[d_0, d_1, ..., d_N]`` of a network: at least two integers ``>= 1``, with
``N + 1`` entries if the chapter has a ``depth`` parameter and ``d_0 = d_x``, ``d_N = d_y``
if it has ``d_x`` / ``d_y``; a list of such lists is checked list by list.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

from dlnbook.chapters import Chapter, ChapterError, Parameter

__all__ = ["Range", "check_ranges", "meaning_without_range", "parameter_range"]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
_ANNOTATION = re.compile(r"\[([^\[\]]*)\]\s*$")
_BOUND = re.compile(r"(>=|<=|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)")


@dataclass(frozen=True)
class Range:
    """Allowed values of one parameter.

    Attributes
    ----------
    bounds : tuple of (str, float)
        Comparisons every number of the value must pass, e.g. ``((">=", 0.0),)``.
    chain : bool
        Whether the value must be network widths ``[d_0, ..., d_N]`` (see module docs).
    source : str
        ``"comment"`` (bracket in the comment) or ``"name"`` (naming convention).
    """

    bounds: tuple[tuple[str, float], ...] = ()
    chain: bool = False
    source: str = "name"

    def __str__(self) -> str:
        items = [f"{op} {_fmt(limit)}" for op, limit in self.bounds]
        if self.chain:
            items.append("chain")
        return ", ".join(items)


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(number)


def _parse_annotation(param: Parameter) -> Range | None:
    """The range in a trailing ``[...]`` of the comment, or None if there is none."""
    match = _ANNOTATION.search(param.meaning)
    if not match or not match.group(1).strip().startswith((">", "<", "=", "!", "chain")):
        return None  # e.g. "widths [d_0, ..., d_N]" is part of the meaning, not a range
    bounds, chain = [], False
    for item in (part.strip() for part in match.group(1).split(",")):
        bound = _BOUND.fullmatch(item)
        if item == "chain":
            chain = True
        elif bound:
            bounds.append((bound.group(1), float(bound.group(2))))
        else:
            raise ChapterError(
                f"parameter {param.name!r}: cannot read range item {item!r} in "
                f"[{match.group(1)}] (use '>= x', '> x', '<= x', '< x' or 'chain')"
            )
    return Range(tuple(bounds), chain, "comment")


def _range_from_name(name: str) -> Range | None:
    words = name.split("_")
    if words[-1] == "steps":
        return Range(((">=", 0.0),))
    if {"eta", "etas"} & set(words) or name.startswith("step_size"):
        return Range(((">", 0.0),))
    if {"depth", "depths"} & set(words) or words[-1] in ("width", "dim"):
        return Range(((">=", 1.0),))
    if words[-1] in ("widths", "dims"):
        return Range(chain=True)
    return None


def parameter_range(param: Parameter) -> Range | None:
    """The allowed range of a parameter: its comment's bracket, else its name's convention.

    Parameters
    ----------
    param : Parameter
        A parsed parameter.

    Returns
    -------
    Range or None
        None if any value of the declared type is allowed.

    Raises
    ------
    ChapterError
        If the comment ends with a bracket that starts like a range but cannot be read.
    """
    return _parse_annotation(param) or _range_from_name(param.name)


def meaning_without_range(param: Parameter) -> str:
    """The parameter's one-line meaning, without a trailing range bracket."""
    if _parse_annotation(param) is None:
        return param.meaning
    return param.meaning[: param.meaning.rindex("[")].rstrip()


def _numbers(value: Any) -> list[Any]:
    """Every leaf of a (nested) list or tuple."""
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in _numbers(item)]
    return [value]


def _check_chain(value: Any, params: Mapping[str, Any]) -> str | None:
    """Why ``value`` is not a chain of widths, or None if it is."""
    if not isinstance(value, list | tuple):
        return f"must be a list of widths [d_0, ..., d_N], got {value!r}"
    if value and all(isinstance(v, list | tuple) for v in value):
        for item in value:
            problem = _check_chain(item, params)
            if problem:
                return problem
        return None
    if len(value) < 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return f"must list at least two integer widths [d_0, ..., d_N], got {value!r}"
    if min(value) < 1:
        return f"needs every width >= 1, got {value!r}"
    depth = params.get("depth")
    if isinstance(depth, int) and len(value) != depth + 1:
        return f"needs depth + 1 = {depth + 1} widths for depth {depth}, got {value!r}"
    for end, other in ((0, "d_x"), (-1, "d_y")):
        if isinstance(params.get(other), int) and value[end] != params[other]:
            where = "start" if end == 0 else "end"
            return f"must {where} with {other} = {params[other]}, got {value!r}"
    return None


def check_ranges(chapter: Chapter, params: Mapping[str, Any]) -> None:
    """Fail on the first parameter value outside its range.

    Parameters
    ----------
    chapter : Chapter
        The chapter whose ``parameters`` cell declares the ranges.
    params : mapping
        Effective parameters (e.g. from :func:`dlnbook.chapters.effective_parameters`).

    Raises
    ------
    ChapterError
        Naming the chapter, the parameter, the range and the offending value.
    """
    for param in chapter.parameters:
        allowed = parameter_range(param)
        value = params.get(param.name)
        if allowed is None or value is None:
            continue
        where = f"parameter {param.name!r} of chapter {chapter.name!r}"
        if allowed.chain:
            problem = _check_chain(value, params)
            if problem:
                raise ChapterError(f"{where} {problem} (widths must chain)")
        for number in _numbers(value):
            if not isinstance(number, Real) or isinstance(number, bool):
                raise ChapterError(f"{where} expects numbers, got {value!r}")
            for op, limit in allowed.bounds:
                if not _OPS[op](number, limit):
                    raise ChapterError(f"{where} must be {op} {_fmt(limit)}, got {value!r}")
