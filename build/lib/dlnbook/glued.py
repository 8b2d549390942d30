"""What an executed chapter glued: its scalar values and its "What we checked" verdicts.

Chapters glue their measured values with ``myst_nb.glue`` and end with an admonition
``What we checked``: a table ``| claim | measured | criterion | held? |`` whose held? cells
are glued verdicts (``{glue:text}`ch2-drift-ok` ``, valued ``"yes"``, ``"no"`` or
``"n/a"``) or a literal ``n/a`` (see ``chapters/README.md``). The run pages count them
(:func:`checks`), the sweep pages show them per point.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Check", "checks", "count_checks", "glue_descriptions", "glued_values"]

_NUMPY_SCALAR = re.compile(r"np\.(?:float|int|uint|bool|complex|str)\w*\((.*)\)", re.S)
#: A glue role in MyST markdown: ``{glue:text}`name:format` ``, ``{glue}`name` ``.
_GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`:]+)(?::[^`]*)?`")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_ROLE = re.compile(r"\{[\w:]+\}`([^`]*)`")
VERDICTS = ("yes", "no", "n/a")
_TEX = {
    **dict.fromkeys(("lvert", "rvert", "vert"), "|"),
    **dict.fromkeys(("lVert", "rVert", "Vert", "|"), "‖"),
    **{"le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "sum": "Σ", "cdot": "·", "cdots": "⋯"},
    **{"top": "ᵀ", "tfrac": "", "frac": "", "infty": "∞", "approx": "≈", "ne": "≠"},
    **{"sigma": "σ", "lambda": "λ", "eta": "η", "varepsilon": "ε", "mu": "μ", "kappa": "κ"},
}


def _scalar(text: str) -> Any:
    match = _NUMPY_SCALAR.fullmatch(text.strip())
    try:
        value = ast.literal_eval(match[1] if match else text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, bool | int | float | str) else None


def _load(notebook: Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(notebook, Mapping):
        return notebook
    return json.loads(Path(notebook).read_text(encoding="utf-8"))


def glued_values(notebook: Path | Mapping[str, Any]) -> dict[str, Any]:
    """Scalars the executed chapter glued (``myst_nb.glue``): name -> value.

    Values are read from the glued ``text/plain`` representation (``repr`` of a float is
    exact); non-scalar glued objects (arrays, figures) are left out.

    Parameters
    ----------
    notebook : Path or mapping
        The executed notebook (a file, or its JSON structure).
    """
    nb = _load(notebook)
    values: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            scrap = output.get("metadata", {}).get("scrapbook")
            if not scrap:
                continue
            text = output.get("data", {}).get(scrap.get("mime_prefix", "") + "text/plain")
            value = _scalar("".join(text) if isinstance(text, list) else text or "")
            if value is not None:
                values[scrap["name"]] = value
    return values


@dataclass(frozen=True)
class Check:
    """One row of a chapter's "What we checked" table.

    Attributes
    ----------
    claim : str
        The row's claim, as plain text (roles and ``$`` removed).
    name : str or None
        The glued verdict of the held? cell, or None when the cell is literal text.
    held : str
        ``"yes"``, ``"no"`` or ``"n/a"`` (a literal ``n/a``, a verdict not glued by the run,
        or anything else).
    markdown : str
        The claim as written (MyST markdown).
    """

    claim: str
    name: str | None
    held: str
    markdown: str = ""


def plain(text: str) -> str:
    """Markdown of a table cell or sentence as plain text: roles show their content,
    ``$``, ``**`` and backslash escapes go, TeX commands lose their backslash."""
    text = _ROLE.sub(lambda m: m.group(1).split("<")[0].strip(), text)
    text = text.replace("$", "").replace("**", "").replace("\\|", "|")
    text = re.sub(r"\\t?frac\s*12(?![0-9])", "½", text)
    text = re.sub(r"\\(?:tfrac|frac)\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", text)
    text = re.sub(r"\\([A-Za-z]+|\|)", lambda m: _TEX.get(m.group(1), m.group(1)), text)
    return re.sub(r"\s+", " ", text.replace("{", "").replace("}", "")).strip()


def _table_rows(markdown: str) -> list[list[str]]:
    rows = []
    for line in markdown.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|"):
            rows.append([c.strip() for c in _CELL_SPLIT.split(line[1:-1])])
    return rows


def checks(notebook: Path | Mapping[str, Any]) -> list[Check]:
    """The rows of the chapter's "What we checked" tables with their verdicts.

    Parameters
    ----------
    notebook : Path or mapping
        An executed notebook whose markdown is the text to read (its glued values give the
        verdicts).

    Returns
    -------
    list of Check
        In table order; empty when the chapter has no such table.
    """
    nb = _load(notebook)
    glued = glued_values(nb)
    found = []
    for cell in nb.get("cells", []):
        text = "".join(cell.get("source", ""))
        if cell.get("cell_type") != "markdown" or "What we checked" not in text:
            continue
        rows = _table_rows(text.split("What we checked", 1)[1])
        if not rows or "held?" not in [c.lower() for c in rows[0]]:
            continue
        column = [c.lower() for c in rows[0]].index("held?")
        for row in rows[1:]:
            if len(row) <= column or set("".join(row)) <= set("-: "):
                continue
            role = _GLUE_ROLE.search(row[column])
            name = role.group(1).strip() if role else None
            value = glued.get(name) if name else row[column]
            held = str(value).strip().lower() if value is not None else "n/a"
            verdict = held if held in VERDICTS else "n/a"
            found.append(Check(plain(row[0]), name, verdict, row[0]))
    return found


def count_checks(found: list[Check]) -> dict[str, int]:
    """How many checks held: ``{"yes": ..., "no": ..., "n/a": ...}``."""
    return {verdict: sum(c.held == verdict for c in found) for verdict in VERDICTS}


def glue_descriptions(notebook: Path | Mapping[str, Any]) -> dict[str, str]:
    """A description of each glued value, taken from the text that shows it.

    In a "What we checked" row, the description is the row's measured cell up to the value
    (or its claim for the held? verdict); in prose, the sentence around the value,
    marked ``[·]`` (other glued values show as ``…``; at most about 90 characters).
    Values shown nowhere get no description.

    Parameters
    ----------
    notebook : Path or mapping
        A chapter notebook (its markdown cells and figure captions are read).

    Returns
    -------
    dict
        Glued name -> plain-text description.
    """
    nb = _load(notebook)
    found: dict[str, str] = {}
    texts = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            texts.append("".join(cell.get("source", "")))
        caption = cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("caption")
        if isinstance(caption, str):
            texts.append(caption)
    for text in texts:  # the "What we checked" rows first
        rows = _table_rows(text.split("What we checked", 1)[1]) if "What we checked" in text else []
        for row in rows[1:]:
            for index, cell in enumerate(row):
                for match in _GLUE_ROLE.finditer(cell):
                    before = plain(_GLUE_ROLE.sub("…", cell[: match.start()])).rstrip(" =:,(")
                    if index == len(row) - 1 or not before:
                        before = f"{plain(row[0])} (held?)" if index == len(row) - 1 else before
                    found.setdefault(match.group(1).strip(), before or plain(row[0]))
    for text in texts:
        for match in _GLUE_ROLE.finditer(text):
            name = match.group(1).strip()
            if name in found:
                continue
            start = max(text.rfind(stop, 0, match.start()) for stop in (". ", "\n\n", ": "))
            ends = [text.find(stop, match.end()) for stop in (". ", ".\n", "\n\n")]
            end = min([e for e in ends if e >= 0] or [len(text)])
            marked = f"{text[start + 1 : match.start()]}\0{text[match.end() : end]}"
            sentence = plain(_GLUE_ROLE.sub("…", marked))
            at = sentence.index("\0")
            window = sentence[max(0, at - 60) : at + 30]
            head = "…" if at > 60 else ""
            tail = "…" if at + 30 < len(sentence) else ""
            found[name] = (head + window + tail).replace("\0", "[·]")
    return found
