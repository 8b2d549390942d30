"""Chapter notebooks and their parameters.

A chapter is a notebook ``chapters/<stem>.ipynb`` with exactly one code cell tagged
``parameters``. Each non-blank line of that cell has the form::

    name = literal  # one-line meaning

where ``literal`` is a Python literal (number, string, bool, None, list, tuple, dict).
The comment may end with the parameter's range in brackets, and comment lines may declare
rules between parameters and cost estimates (see :mod:`dlnbook.ranges` and
:mod:`dlnbook.rules`); all of it is
parsed once, here. The parsed defaults can be overridden (from a profile or the command
line) and are then *effective parameters*, which papermill injects.
"""

from __future__ import annotations

import ast
import io
import json
import math
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlnbook.ranges import ChapterError, Range, parse_range, show
from dlnbook.rules import Estimate, Rule, parse_checks

__all__ = [
    "Chapter",
    "ChapterError",
    "Parameter",
    "discover_chapters",
    "effective_parameters",
    "load_chapter",
    "parse_override",
    "parse_parameters_source",
]

PARAMETERS_TAG = "parameters"
INT_LIMIT = 2**63
"""Integer parameters must lie strictly between ``-INT_LIMIT`` and ``INT_LIMIT``."""


@dataclass(frozen=True)
class Parameter:
    """One line of a chapter's ``parameters`` cell.

    Attributes
    ----------
    name : str
        Variable name.
    default : Any
        Value written in the notebook.
    meaning : str
        The one-line comment after the value (with its range bracket, if any).
    range : Range or None
        Allowed values, from the bracket at the end of the comment.
    """

    name: str
    default: Any
    meaning: str
    range: Range | None = None


@dataclass(frozen=True)
class Chapter:
    """A chapter notebook and its declared parameters.

    Attributes
    ----------
    path : Path
        Absolute path of the source notebook.
    parameters : tuple of Parameter
        Parameters in the order of the ``parameters`` cell.
    rules : tuple of Rule
        The ``# rule:`` lines of the cell.
    estimates : tuple of Estimate
        The ``# memory:`` and ``# time:`` lines of the cell.
    """

    path: Path
    parameters: tuple[Parameter, ...]
    rules: tuple[Rule, ...] = ()
    estimates: tuple[Estimate, ...] = ()

    @property
    def name(self) -> str:
        """File stem, e.g. ``"02_boundedness"``; the key used by profiles and the CLI."""
        return self.path.stem

    @property
    def defaults(self) -> dict[str, Any]:
        """Mapping of parameter name to its default value."""
        return {p.name: p.default for p in self.parameters}


def _split_comment(line: str) -> tuple[str, str]:
    """Split one source line into code and the text of its trailing ``#`` comment."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line).readline))
    except (tokenize.TokenError, SyntaxError):
        return line, ""
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            return line[: tok.start[1]], tok.string.lstrip("#").strip()
    return line, ""


def parse_parameters_source(source: str, where: str = "parameters cell") -> tuple[Parameter, ...]:
    """Parse the source of a ``parameters`` cell.

    Parameters
    ----------
    source : str
        Cell source; one ``name = literal  # meaning`` assignment per line.
    where : str
        Description of the cell used in error messages (e.g. the notebook path).

    Returns
    -------
    tuple of Parameter
        The parameters, in source order.

    Raises
    ------
    ChapterError
        If a line is not a single assignment of a literal to a name with a comment, or a
        name is assigned twice.
    """
    params: list[Parameter] = []
    seen: set[str] = set()
    for lineno, line in enumerate(source.splitlines(), start=1):
        if not line.strip() or line.strip().startswith("#"):
            continue
        expected = f"expected 'name = literal  # meaning', got {line.strip()!r}"
        code, meaning = _split_comment(line)
        try:
            tree = ast.parse(code.strip())
        except SyntaxError:
            raise ChapterError(f"{where}, line {lineno}: {expected}") from None
        if (
            len(tree.body) != 1
            or not isinstance(tree.body[0], ast.Assign)
            or len(tree.body[0].targets) != 1
            or not isinstance(tree.body[0].targets[0], ast.Name)
        ):
            raise ChapterError(f"{where}, line {lineno}: {expected}")
        name = tree.body[0].targets[0].id
        try:
            value = ast.literal_eval(tree.body[0].value)
        except ValueError:
            raise ChapterError(
                f"{where}, line {lineno}: the value of {name!r} must be a Python literal "
                "(number, string, bool, None, list, tuple or dict)"
            ) from None
        if not meaning:
            raise ChapterError(
                f"{where}, line {lineno}: parameter {name!r} needs a one-line '# meaning' comment"
            )
        if name in seen:
            raise ChapterError(f"{where}, line {lineno}: parameter {name!r} is assigned twice")
        seen.add(name)
        try:
            allowed = parse_range(meaning)
        except ChapterError as exc:
            raise ChapterError(f"{where}, line {lineno}: parameter {name!r}: {exc}") from None
        params.append(Parameter(name=name, default=value, meaning=meaning, range=allowed))
    return tuple(params)


def _parameters_cell_source(nb: Mapping[str, Any], where: str) -> str:
    """Return the source of the unique code cell tagged ``parameters``."""
    cells = [
        cell
        for cell in nb.get("cells", [])
        if cell.get("cell_type") == "code"
        and PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])
    ]
    if len(cells) != 1:
        raise ChapterError(
            f"{where}: expected exactly one code cell tagged {PARAMETERS_TAG!r}, found {len(cells)}"
        )
    source = cells[0].get("source", "")
    return "".join(source) if isinstance(source, list) else source


def load_chapter(path: str | Path) -> Chapter:
    """Read a chapter notebook and parse its ``parameters`` cell.

    Parameters
    ----------
    path : str or Path
        Path of the ``.ipynb`` file.

    Returns
    -------
    Chapter

    Raises
    ------
    ChapterError
        If the file is not a notebook or its parameters cell is missing or malformed.
    """
    path = Path(path).resolve()
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ChapterError(f"{path}: cannot read notebook: {exc}") from None
    source = _parameters_cell_source(nb, str(path))
    params = parse_parameters_source(source, str(path))
    rules, estimates = parse_checks(source, {p.name for p in params}, str(path))
    return Chapter(path=path, parameters=params, rules=rules, estimates=estimates)


def discover_chapters(chapters_dir: str | Path) -> list[Chapter]:
    """Load every chapter notebook of a directory, sorted by file name.

    Parameters
    ----------
    chapters_dir : str or Path
        Directory holding the ``*.ipynb`` chapters (not searched recursively).

    Returns
    -------
    list of Chapter

    Raises
    ------
    ChapterError
        If the directory does not exist or a chapter is malformed.
    """
    chapters_dir = Path(chapters_dir)
    if not chapters_dir.is_dir():
        raise ChapterError(f"chapters directory not found: {chapters_dir}")
    return [load_chapter(p) for p in sorted(chapters_dir.glob("*.ipynb"))]


_KINDS = {bool: "bools", int: "ints", float: "finite numbers", str: "strings"}


def _coerce_scalar(problem: str, default: Any, value: Any) -> Any:
    """Check one value against the type of a scalar default: ints stay ints within
    ``±INT_LIMIT``, floats are finite (ints and numeric strings may stand for floats: YAML
    reads ``1e-3`` as a string)."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ChapterError(f"{problem} expects a bool, got {show(value)}")
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ChapterError(f"{problem} expects an int, got {show(value)}")
        if not -INT_LIMIT < value < INT_LIMIT:
            raise ChapterError(
                f"{problem} expects an int between -2**63 and 2**63, got {show(value)}"
            )
        return value
    if isinstance(default, float):
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ChapterError(f"{problem} expects a number, got {show(value)}")
        try:
            number = float(number)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ChapterError(f"{problem} expects a finite number, got {show(value)}")
        return number
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise ChapterError(f"{problem} expects a string, got {show(value)}")
    return value


def _coerce(chapter: str, name: str, default: Any, value: Any) -> Any:
    """Check an override against the type of the default; a list's entries are checked
    against the type of the default's entries (so a flat list refuses nested lists)."""
    problem = f"parameter {name!r} of chapter {chapter!r}"
    if not isinstance(default, list | tuple):
        return _coerce_scalar(problem, default, value)
    if not isinstance(value, list | tuple):
        raise ChapterError(f"{problem} expects a list, got {show(value)}")
    kinds = {type(entry) for entry in default}
    if len(kinds) == 1 and isinstance(default[0], bool | int | float | str):
        try:
            entries = [_coerce_scalar(problem, default[0], v) for v in value]
        except ChapterError:
            kind = _KINDS[type(default[0])]
            raise ChapterError(
                f"{problem} expects a flat list of {kind}, got {show(value)}"
            ) from None
    else:
        entries = list(value)
    return entries if isinstance(default, list) else tuple(entries)


def effective_parameters(chapter: Chapter, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge overrides into a chapter's defaults.

    Parameters
    ----------
    chapter : Chapter
        The chapter.
    overrides : mapping or None
        Parameter name -> value; every name must be declared by the chapter.

    Returns
    -------
    dict
        All parameters of the chapter, in declaration order, overrides applied.

    Raises
    ------
    ChapterError
        On an unknown parameter name or a value of the wrong type.
    """
    params = chapter.defaults
    for name, value in (overrides or {}).items():
        if name not in params:
            known = ", ".join(params) or "none"
            raise ChapterError(
                f"chapter {chapter.name!r} has no parameter {name!r} (known: {known})"
            )
        params[name] = _coerce(chapter.name, name, params[name], value)
    return params


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a ``NAME=VALUE`` override as given on a command line.

    ``VALUE`` is read as a Python literal when possible (``3``, ``1e-3``, ``True``,
    ``[2, 3]``) and kept as a string otherwise.

    Parameters
    ----------
    text : str
        The override, e.g. ``"steps=100"``.

    Returns
    -------
    tuple
        ``(name, value)``.

    Raises
    ------
    ChapterError
        If there is no ``=`` or the name is not an identifier.
    """
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ChapterError(f"expected NAME=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError, RecursionError, MemoryError):
        value = raw.strip()
    return name, value
