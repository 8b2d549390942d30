"""What a chapter page shows, in the book (:mod:`dlnbook.sphinx_ext`) and on a run's page
(:mod:`dlnbook.export`): the current text with the outputs of the run, a parameters box, code
folded but for the cells that teach, figures with their caption as alt text. Loads no Sphinx."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from docutils import nodes

from dlnbook.chapters import meaning_without_range
from dlnbook.glued import figure_cells

if TYPE_CHECKING:
    from pathlib import Path

    from dlnbook.runner import Plan

__all__ = ["SHOW_INPUT", "apply_page_rules", "caption_alt_texts", "figure_problems", "fmt_value"]
__all__ += ["parameters_box", "render_executed", "rerun_command"]

#: Tag of a code cell whose input stays visible on the page (the chapter's central call).
SHOW_INPUT = "show-input"

_KEEP = ("remove-cell", "remove-input", "hide-cell", "hide-input", "parameters", SHOW_INPUT)


def fmt_value(value: Any) -> str:
    """A value as MyST inline code (its ``repr``)."""
    text = repr(value)
    return f"``{text}``" if "`" in text else f"`{text}`"


def _shell_word(text: str) -> str:
    """``text`` as one word of a shell command, in double quotes where that suffices."""
    if shlex.quote(text) == text or any(c in text for c in '"$`\\!'):
        return shlex.quote(text)
    return f'"{text}"'


def rerun_command(plan: Plan) -> str:
    """The ``dln-book run`` command that reproduces a run (shell-quoted, defaults left out),
    e.g. ``dln-book run 01_setting -p steps=30 -p "depths=[2, 3]"``."""
    defaults = plan.chapter.defaults
    args = ["dln-book", "run", plan.chapter.name]
    for name, value in plan.parameters.items():
        if value != defaults.get(name):
            args += ["-p", _shell_word(f"{name}={value!r}")]
    return " ".join(args)


def parameters_box(plan: Plan, source: str | None = None) -> str:
    """MyST admonition listing the parameters ``plan`` ran with (parameter, value, meaning;
    changed ones in bold), where the overrides came from (``source``, e.g. a profile) and
    the command that reruns it."""
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


def render_executed(plan: Plan, source: str | None = None, executed: Path | None = None) -> str:
    """Notebook JSON of a chapter page: the chapter's current text with the outputs of its
    run ``executed`` (default ``plan.executed_notebook``; code cells matched in order, the
    ``injected-parameters`` cell left out), the :func:`parameters_box` (``source``: where
    the overrides came from) after the title and the page rules applied.

    Raises
    ------
    ValueError
        If the code cells differ (the notebook changed after the run was planned).
    """
    nb = json.loads(plan.chapter.path.read_text(encoding="utf-8"))
    ran = json.loads((executed or plan.executed_notebook).read_text(encoding="utf-8"))
    done = [
        cell
        for cell in ran.get("cells", [])
        if cell.get("cell_type") == "code"
        and "injected-parameters" not in cell.get("metadata", {}).get("tags", [])
    ]
    code = [cell for cell in nb.get("cells", []) if cell.get("cell_type") == "code"]
    sources = ["".join(cell.get("source", "")) for cell in code]
    if sources != ["".join(cell.get("source", "")) for cell in done]:
        raise ValueError("the code cells of the notebook changed since it was executed")
    for cell, out in zip(code, done, strict=True):
        cell["outputs"] = out.get("outputs", [])
        cell["execution_count"] = out.get("execution_count")
    if "language_info" in ran.get("metadata", {}):
        nb.setdefault("metadata", {})["language_info"] = ran["metadata"]["language_info"]
    cells = nb.get("cells", [])
    box = {"cell_type": "markdown", "id": "dlnbook-parameters", "metadata": {}}
    at = 1 if cells and cells[0].get("cell_type") == "markdown" else 0
    cells.insert(at, {**box, "source": parameters_box(plan, source)})
    return json.dumps(apply_page_rules(nb))


def figure_problems(nb: dict[str, Any]) -> list[str]:
    """One message per figure cell of an executed notebook that does not display exactly
    one image (MyST-NB names each image after the figure: none or two break the name)."""
    problems = []
    for cell, figure in figure_cells(nb):
        outputs = cell.get("outputs", [])
        images = sum(any(m.startswith("image/") for m in o.get("data", {})) for o in outputs)
        if images != 1:
            problems.append(
                f"figure cell {figure.get('name')!r} displays {images} images, "
                "expected exactly 1: create the figure once and do not end the cell with "
                "`fig` (the inline backend already shows it; end with an assignment)"
            )
    return problems


def caption_alt_texts(app: object, doctree: nodes.document, docname: str) -> None:
    """Sphinx's ``doctree-resolved``: the image of each figure without an ``alt`` gets its
    caption as it reads on the page, references resolved ("Fig. 3.3", "Proposition 1.1"),
    math as its TeX source, whitespace collapsed."""
    for figure in doctree.findall(nodes.figure):
        caption = next(iter(figure.findall(nodes.caption)), None)
        for image in figure.findall(nodes.image) if caption is not None else ():
            image.setdefault("alt", " ".join(caption.astext().split()))


def apply_page_rules(nb: dict[str, Any]) -> dict[str, Any]:
    """Remove the ``parameters`` cell of a chapter notebook (JSON, changed in place and
    returned), fold its code but for the cells tagged :data:`SHOW_INPUT` or already
    ``remove-*``/``hide-*``, and let images that state a display width (retina PNGs) keep
    their aspect ratio when scaled."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        metadata = cell.setdefault("metadata", {})
        tags = metadata.setdefault("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        if not any(tag in _KEEP for tag in tags):
            tags.append("hide-input")
        for output in cell.get("outputs", []):
            for shown in output.get("metadata", {}).values():
                if isinstance(shown, dict) and "width" in shown:
                    shown.pop("height", None)
    return nb
