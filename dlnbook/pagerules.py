"""What a chapter page shows: its current text with the outputs of its run, and the rules
every chapter page is rendered with. Used by the book (:mod:`dlnbook.sphinx_ext`) and by the
standalone page of a run (:mod:`dlnbook.export`); loads no Sphinx.

- **Text of now, outputs of the run.** The chapter notebook as it is now, with the outputs of
  its executed copy (:func:`merge_outputs`): prose edits need no rerun.
- **Parameters box.** The ``parameters`` cell is removed; a box after the title lists the
  parameters the chapter ran with, changed ones in bold, and the command that reruns it.
- **Code folded.** Every code cell gets Jupyter Book's ``hide-input`` tag (its output stays, a
  click shows the code), except the cells that teach: those tagged :data:`SHOW_INPUT` by the
  chapter's author, and cells that already carry a ``remove-*`` or ``hide-*`` tag.
- **Alt text.** The image of a figure cell gets its caption as alt text (MyST-NB's
  ``mystnb.image.alt``), in plain words: math without ``$``, cross-references by their target.
- **Aspect ratio.** An image output that states its display width (a ``retina`` PNG, drawn at
  twice that size) loses its stated height, so that a narrower column scales it undistorted.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlnbook.chapters import meaning_without_range

if TYPE_CHECKING:
    from dlnbook.runner import Plan

__all__ = [
    "SHOW_INPUT",
    "alt_text",
    "apply_page_rules",
    "figure_problems",
    "fmt_value",
    "merge_outputs",
    "parameters_box",
    "render_executed",
    "rerun_command",
]

#: Tag of a code cell whose input stays visible on the page (the chapter's central call).
SHOW_INPUT = "show-input"

_KEEP = ("remove-cell", "remove-input", "hide-cell", "hide-input", "parameters", SHOW_INPUT)
_ROLE = re.compile(r"\{[a-z:-]+\}`([^`]*)`")


def fmt_value(value: Any) -> str:
    """A value as MyST inline code (its ``repr``)."""
    text = repr(value)
    return f"``{text}``" if "`" in text else f"`{text}`"


def _shell_word(text: str) -> str:
    """``text`` as one word of a shell command, in double quotes where that suffices."""
    if shlex.quote(text) == text or any(c in text for c in '"$`\\!'):
        return shlex.quote(text)
    return f'"{text}"'


def rerun_command(plan: Plan, program: str = "dln-book") -> str:
    """The ``dln-book run`` command that reproduces a run (shell-quoted, defaults left out).

    >>> rerun_command(plan)  # doctest: +SKIP
    'dln-book run 01_setting -p steps=30 -p "depths=[2, 3]"'
    """
    defaults = plan.chapter.defaults
    args = [program, "run", plan.chapter.name]
    for name, value in plan.parameters.items():
        if value != defaults.get(name):
            args += ["-p", _shell_word(f"{name}={value!r}")]
    return " ".join(args)


def parameters_box(plan: Plan, source: str | None = None) -> str:
    """MyST markdown of the box that lists the parameters a chapter ran with.

    Parameters
    ----------
    plan : Plan
        The run that is rendered.
    source : str, optional
        Where the overrides came from (e.g. ``"profiles/smoke.yml"``).

    Returns
    -------
    str
        An ``admonition`` directive holding a table: parameter, value, meaning.
    """
    rows = ["| parameter | value | meaning |", "| --- | --- | --- |"]
    for param in plan.chapter.parameters:
        value = plan.parameters[param.name]
        cell, label = fmt_value(value), f"`{param.name}`"
        if value != param.default:  # highlighted: the name in bold, the default beside
            cell, label = f"{cell} (default {fmt_value(param.default)})", f"**{label}**"
        meaning = meaning_without_range(param).replace("|", "\\|")
        rows.append(f"| {label} | {cell} | {meaning} |")
    origin = "the chapter's `parameters` cell"
    if source and any(plan.parameters[p.name] != p.default for p in plan.chapter.parameters):
        origin += f", overridden by `{source}`"
    footer = (
        f"Values from {origin}. Executed copy: `{plan.run_dir.name}`. "
        f"Rerun it: `{rerun_command(plan)}`; change a value with `-p NAME=VALUE`."
    )
    table = "\n".join(rows)
    return f"````{{admonition}} Parameters of this run\n:class: note\n\n{table}\n\n{footer}\n````\n"


def _tags(cell: dict[str, Any]) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def merge_outputs(source: dict[str, Any], executed: dict[str, Any]) -> dict[str, Any]:
    """The current source notebook with the outputs of its executed copy.

    Text (markdown cells, captions and other cell metadata) comes from ``source``, outputs
    and execution counts from ``executed``. Code cells are matched in order, skipping
    papermill's ``injected-parameters`` cell; the run's key covers the code cells, so they
    agree unless the notebook changed after the run was planned.

    Parameters
    ----------
    source : dict
        The chapter notebook as it is now (JSON structure); not modified.
    executed : dict
        Its executed copy (JSON structure).

    Returns
    -------
    dict
        A new notebook (JSON structure) without the ``injected-parameters`` cell.

    Raises
    ------
    ValueError
        If the code cells of the two notebooks differ.
    """
    nb = copy.deepcopy(source)
    done = [
        cell
        for cell in executed.get("cells", [])
        if cell.get("cell_type") == "code" and "injected-parameters" not in _tags(cell)
    ]
    code = [cell for cell in nb.get("cells", []) if cell.get("cell_type") == "code"]
    sources = ["".join(cell.get("source", "")) for cell in code]
    if sources != ["".join(cell.get("source", "")) for cell in done]:
        raise ValueError("the code cells of the notebook changed since it was executed")
    for cell, ran in zip(code, done, strict=True):
        cell["outputs"] = ran.get("outputs", [])
        cell["execution_count"] = ran.get("execution_count")
    if "language_info" in executed.get("metadata", {}):
        nb.setdefault("metadata", {})["language_info"] = executed["metadata"]["language_info"]
    return nb


def render_executed(plan: Plan, source: str | None = None, executed: Path | None = None) -> str:
    """Notebook JSON to render for a chapter: its current text with the outputs of its run,
    the parameters box after the title cell and the page rules applied.

    Parameters
    ----------
    plan : Plan
        A run that is cached (its executed copy exists).
    source : str, optional
        Origin of the overrides, shown in the box.
    executed : Path, optional
        The executed copy; by default ``plan.executed_notebook``.

    Returns
    -------
    str
        Notebook JSON.
    """
    current = json.loads(plan.chapter.path.read_text(encoding="utf-8"))
    ran = json.loads((executed or plan.executed_notebook).read_text(encoding="utf-8"))
    nb = merge_outputs(current, ran)
    cells = nb.get("cells", [])
    for cell in cells:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    box = {"cell_type": "markdown", "id": "dlnbook-parameters", "metadata": {}}
    at = 1 if cells and cells[0].get("cell_type") == "markdown" else 0
    cells.insert(at, {**box, "source": parameters_box(plan, source)})
    return json.dumps(apply_page_rules(nb))


def figure_problems(nb: dict[str, Any]) -> list[str]:
    """One message per figure cell (``mystnb.figure`` metadata) of an executed notebook that
    does not display exactly one image: MyST-NB names every image of such a cell after the
    figure, so none leaves the name undefined and two duplicate it."""
    problems = []
    for cell in nb.get("cells", []):
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure")
        if not figure or cell.get("cell_type") != "code":
            continue
        images = sum(
            any(mime.startswith("image/") for mime in output.get("data", {}))
            for output in cell.get("outputs", [])
        )
        if images != 1:
            problems.append(
                f"figure cell {figure.get('name')!r} displays {images} images, "
                "expected exactly 1: create the figure once and do not end the cell with "
                "`fig` (the inline backend already shows it; end with an assignment)"
            )
    return problems


def alt_text(caption: str) -> str:
    """Plain-text version of a MyST caption, for an image's ``alt`` attribute.

    Parameters
    ----------
    caption : str
        MyST markdown of one paragraph (inline math, roles such as ``{numref}`fig-x```).

    Returns
    -------
    str
        The caption without ``$`` delimiters and role markup (a role keeps its target or
        its explicit title), whitespace collapsed.
    """
    text = _ROLE.sub(lambda m: m[1].split("<")[0].strip() or m[1], caption).replace("$", "")
    return " ".join(text.replace("`", "").split())


def apply_page_rules(nb: dict[str, Any]) -> dict[str, Any]:
    """Fold the code of a chapter notebook, give its figure images alt text and let them keep
    their aspect ratio when scaled; in place, ``nb`` (JSON structure) is returned."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        metadata = cell.setdefault("metadata", {})
        tags = metadata.setdefault("tags", [])
        if not any(tag in _KEEP for tag in tags):
            tags.append("hide-input")
        for output in cell.get("outputs", []):
            for shown in output.get("metadata", {}).values():
                if isinstance(shown, dict) and "width" in shown:
                    shown.pop("height", None)
        mystnb = metadata.get("mystnb", {})
        caption = mystnb.get("figure", {}).get("caption")
        if caption and "alt" not in mystnb.get("image", {}):
            mystnb.setdefault("image", {})["alt"] = alt_text(caption)
    return nb
