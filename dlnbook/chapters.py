"""Chapter notebooks, their ``parameters`` cells, YAML files of parameters, and
:func:`validate`, the one check of new values used by every command and the Sphinx build.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dlnbook import checks
from dlnbook.checks import ChapterError, Range, show

__all__ = ["Chapter", "ChapterError", "Parameter", "discover_chapters", "load_chapter"]
__all__ += ["effective_parameters", "meaning_without_range", "parse_override", "validate"]
__all__ += ["check_profile", "load_profile", "load_yaml", "parse_parameters_source"]

#: Integer parameters lie strictly between ``-INT_LIMIT`` and ``INT_LIMIT``.
INT_LIMIT = 2**63


@dataclass(frozen=True)
class Parameter:
    """One ``name = default  # meaning [range]`` line (``range`` None: any value)."""

    name: str
    default: Any
    meaning: str
    range: Range | None = None


@dataclass(frozen=True)
class Chapter:
    """A chapter notebook and what its ``parameters`` cell declares; ``error``: why it
    cannot be read (:func:`validate` then refuses it)."""

    path: Path
    parameters: tuple[Parameter, ...]
    rules: tuple[checks.Rule, ...] = ()
    estimates: tuple[checks.Estimate, ...] = ()
    error: str | None = None

    @property
    def name(self) -> str:  # e.g. "02_boundedness"
        return self.path.stem

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.parameters}


def _parse_line(line: str) -> Parameter:
    code, comment = checks.split_at(line, "#")
    try:
        body = ast.parse(code.strip()).body
    except SyntaxError:
        body = []
    node = body[0] if len(body) == 1 else None
    if not (isinstance(node, ast.Assign) and [type(t) for t in node.targets] == [ast.Name]):
        raise ChapterError(f"expected 'name = literal  # meaning', got {line.strip()!r}")
    name, meaning = node.targets[0].id, comment.lstrip("#").strip()
    try:
        value = ast.literal_eval(node.value)
    except ValueError:
        raise ChapterError(
            f"the value of {name!r} must be a Python literal "
            "(number, string, bool, None, list, tuple or dict)"
        ) from None
    if not meaning:
        raise ChapterError(f"parameter {name!r} needs a one-line '# meaning' comment")
    try:
        return Parameter(name, value, meaning, checks.parse_range(meaning))
    except ChapterError as exc:
        raise ChapterError(f"parameter {name!r}: {exc}") from None


def parse_parameters_source(source: str, where: str = "parameters cell") -> tuple[Parameter, ...]:
    """The parameters of a ``parameters`` cell; :class:`ChapterError` located by ``where``."""
    params: dict[str, Parameter] = {}
    for lineno, line in enumerate(source.splitlines(), start=1):
        if not line.strip() or line.strip().startswith("#"):
            continue
        try:
            param = _parse_line(line)
            if param.name in params:
                raise ChapterError(f"parameter {param.name!r} is assigned twice")
        except ChapterError as exc:
            raise ChapterError(f"{where}, line {lineno}: {exc}") from None
        params[param.name] = param
    return tuple(params.values())


def load_chapter(path: str | Path) -> Chapter:
    """Read a chapter notebook and its ``parameters`` cell (:class:`ChapterError`)."""
    path = Path(path).resolve()
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise ChapterError(f"{path}: cannot read notebook: {exc}") from None
    code = [c for c in cells if c.get("cell_type") == "code"]
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ChapterError(
            f"{path}: expected exactly one code cell tagged 'parameters', found {len(tagged)}"
        )
    source = "".join(tagged[0].get("source", ""))
    params = parse_parameters_source(source, str(path))
    rules, estimates = checks.parse_checks(source, {p.name for p in params}, str(path))
    return Chapter(path, params, rules, estimates)


def discover_chapters(chapters_dir: str | Path) -> list[Chapter]:
    """Every ``*.ipynb`` of a folder, by name; one that cannot be read has its ``error``."""
    chapters_dir = Path(chapters_dir)
    if not chapters_dir.is_dir():
        raise ChapterError(f"chapters directory not found: {chapters_dir}")
    chapters = []
    for path in sorted(chapters_dir.glob("*.ipynb")):
        try:
            chapters.append(load_chapter(path))
        except ChapterError as exc:
            chapters.append(Chapter(path.resolve(), (), error=str(exc)))
    return chapters


def meaning_without_range(param: Parameter) -> str:
    meaning = param.meaning
    return meaning if param.range is None else meaning[: meaning.rindex("[")].rstrip()


_KINDS = {bool: "bools", int: "ints", float: "finite numbers", str: "strings"}


def _coerce_scalar(problem: str, default: Any, value: Any) -> Any:
    """``value`` checked against the type of ``default`` (a float may be given as an int or
    a numeric string: YAML reads ``1e-3`` as a string)."""
    if isinstance(default, bool | str):
        if isinstance(value, type(default)):
            return value
        kind = "bool" if isinstance(default, bool) else "string"
        raise ChapterError(f"{problem} expects a {kind}, got {show(value)}")
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ChapterError(f"{problem} expects an int, got {show(value)}")
        if not -INT_LIMIT < value < INT_LIMIT:
            raise ChapterError(
                f"{problem} expects an int between -2**63 and 2**63, got {show(value)}"
            )
        return value
    if not isinstance(default, float):
        return value
    try:
        number = None if isinstance(value, bool) else float(value)
    except OverflowError:  # an int beyond float range
        number = math.inf
    except (TypeError, ValueError):
        number = None
    if number is None or not isinstance(value, int | float | str):
        raise ChapterError(f"{problem} expects a number, got {show(value)}")
    if not math.isfinite(number):
        raise ChapterError(f"{problem} expects a finite number, got {show(value)}")
    return number


def _coerce(chapter: str, name: str, default: Any, value: Any) -> Any:
    """``value`` checked against ``default``; a list's entries against the default's."""
    problem = f"parameter {name!r} of chapter {chapter!r}"
    if not isinstance(default, list | tuple):
        return _coerce_scalar(problem, default, value)
    if not isinstance(value, list | tuple):
        raise ChapterError(f"{problem} expects a list, got {show(value)}")
    entries = list(value)
    if len({type(entry) for entry in default}) == 1 and type(default[0]) in _KINDS:
        try:
            entries = [_coerce_scalar(problem, default[0], v) for v in value]
        except ChapterError:
            kind = _KINDS[type(default[0])]
            raise ChapterError(
                f"{problem} expects a flat list of {kind}, got {show(value)}"
            ) from None
    return entries if isinstance(default, list) else tuple(entries)


def effective_parameters(chapter: Chapter, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The defaults with ``overrides`` merged in, names and types checked."""
    if chapter.error:
        raise ChapterError(chapter.error)
    params = chapter.defaults
    for name, value in (overrides or {}).items():
        if name not in params:
            known = ", ".join(params) or "none"
            raise ChapterError(
                f"chapter {chapter.name!r} has no parameter {name!r} (known: {known})"
            )
        params[name] = _coerce(chapter.name, name, params[name], value)
    return params


def validate(
    chapter: Chapter, overrides: Mapping[str, Any] | None, allow_large: bool = False
) -> dict[str, Any]:
    """The effective parameters of a run, checked: names, types, ranges, rules and (unless
    ``allow_large``) the memory and time estimates; else a one-line :class:`ChapterError`."""
    params = effective_parameters(chapter, overrides)
    for param in chapter.parameters:
        value = params[param.name]
        if param.range and value is not None and (problem := param.range.problem(value, params)):
            raise ChapterError(f"parameter {param.name!r} of chapter {chapter.name!r} {problem}")
    for rule in chapter.rules:
        if problem := rule.problem(params):
            raise ChapterError(f"chapter {chapter.name!r} {problem}")
    for estimate in () if allow_large else chapter.estimates:
        amount, kind = estimate.value(params), estimate.kind
        limit = checks.machine_memory() if kind == "memory" else checks.MAX_SECONDS
        if not amount <= limit:
            need, what = (
                ("take", "the limit is") if kind == "time" else ("need", "this machine has")
            )
            raise ChapterError(
                f"chapter {chapter.name!r} would {need} an estimated "
                f"{checks.human(kind, amount)} ({kind}: {estimate}); "
                f"{what} {checks.human(kind, limit)}; pass --allow-large to run it anyway"
            )
    return params


def parse_override(text: str) -> tuple[str, Any]:
    """``(name, value)`` of ``NAME=VALUE``: ``VALUE`` a Python literal, else a string."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ChapterError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError, RecursionError, MemoryError):
        return name, raw.strip()


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML without aliases (refused before anything expands), merge keys or a key
    written twice."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            _refuse("aliases (*name) are not allowed", self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                _refuse("merge keys (<<) are not allowed", key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base class reports an unhashable key
            if key in seen:
                _refuse(f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _refuse(problem: str, mark: Any) -> None:
    raise yaml.MarkedYAMLError(problem=problem, problem_mark=mark)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_mapping)


def load_yaml(path: str | Path, what: str) -> Any:
    """The document of a YAML file (None when empty); ``what`` names it in the one-line
    :class:`ChapterError`."""
    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_StrictLoader)
    except OSError as exc:
        raise ChapterError(f"cannot read {what} {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ChapterError(f"{what} {path} is not UTF-8 text: {exc}") from None
    except RecursionError:
        raise ChapterError(f"{what} {path} is nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ChapterError(f"{what} {path} is not valid YAML: {problem}{where}") from None


def load_profile(path: str | Path) -> dict[str, dict[str, Any]]:
    """A profile: YAML mapping chapter stems to ``{parameter: value}``."""
    data = load_yaml(path, "parameter profile") or {}
    if not isinstance(data, dict):
        raise ChapterError(f"parameter profile {path}: expected a mapping chapter -> parameters")
    for chapter, overrides in data.items():
        if not isinstance(overrides or {}, dict) or not all(
            map(str.__instancecheck__, overrides or {})
        ):
            raise ChapterError(
                f"parameter profile {path}: entry {chapter!r} must map parameter names to values"
            )
    return {str(chapter): dict(overrides or {}) for chapter, overrides in data.items()}


def check_profile(
    profile: Mapping[str, Any], chapter_names: Iterable[str], source: str = "profile"
) -> None:
    names = set(chapter_names)
    if unknown := sorted(set(profile) - names):
        raise ChapterError(
            f"{source} names unknown chapter(s) {', '.join(unknown)} "
            f"(chapters: {', '.join(sorted(names))})"
        )
