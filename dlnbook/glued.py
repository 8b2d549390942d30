"""What an executed chapter glued (``myst_nb.glue``): its scalar values, the verdicts of its
"What we checked" table (format: ``chapters/README.md``) and the text that shows each value."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Check", "checks", "count_checks", "figure_cells", "glue_descriptions"]
__all__ += ["glued_values", "plain"]

Notebook = Path | Mapping[str, Any]
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


def _load(notebook: Notebook) -> Mapping[str, Any]:
    if isinstance(notebook, Mapping):
        return notebook
    return json.loads(Path(notebook).read_text(encoding="utf-8"))


def _scalar(text: str) -> Any:
    match = _NUMPY_SCALAR.fullmatch(text.strip())
    try:
        value = ast.literal_eval(match[1] if match else text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, bool | int | float | str) else None


def glued_values(notebook: Notebook) -> dict[str, Any]:
    """Name -> value of each scalar the executed ``notebook`` (file or JSON) glued, read
    exactly from its ``text/plain`` representation; arrays and figures are left out."""
    values: dict[str, Any] = {}
    for cell in _load(notebook).get("cells", []):
        for output in cell.get("outputs", []):
            scrap = output.get("metadata", {}).get("scrapbook")
            if scrap:
                text = output.get("data", {}).get(scrap.get("mime_prefix", "") + "text/plain")
                value = _scalar("".join(text) if isinstance(text, list) else text or "")
                if value is not None:
                    values[scrap["name"]] = value
    return values


def figure_cells(notebook: Mapping[str, Any]) -> list[tuple[dict, dict]]:
    """``(cell, its mystnb.figure metadata)`` of each figure cell of a notebook (JSON)."""
    cells = notebook.get("cells", [])
    found = [(cell, cell.get("metadata", {}).get("mystnb", {}).get("figure")) for cell in cells]
    return [(cell, figure) for cell, figure in found if figure and cell.get("cell_type") == "code"]


@dataclass(frozen=True)
class Check:
    """A row of a "What we checked" table: its claim as plain text and as written
    (``markdown``), the glued verdict's ``name`` (None for literal text) and ``held``:
    ``"yes"``, ``"no"`` or ``"n/a"`` (also for a verdict not glued, or anything else)."""

    claim: str
    name: str | None
    held: str
    markdown: str = ""


def plain(text: str) -> str:
    """Markdown as plain text: roles show their content, ``$``, ``**`` and escapes go, TeX
    commands become their symbol or lose their backslash."""
    text = _ROLE.sub(lambda m: m.group(1).split("<")[0].strip(), text)
    text = text.replace("$", "").replace("**", "").replace("\\|", "|")
    text = re.sub(r"\\t?frac\s*12(?![0-9])", "½", text)
    text = re.sub(r"\\(?:tfrac|frac)\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", text)
    text = re.sub(r"\\([A-Za-z]+|\|)", lambda m: _TEX.get(m.group(1), m.group(1)), text)
    return re.sub(r"\s+", " ", text.replace("{", "").replace("}", "")).strip()


def _checked_rows(nb: Mapping[str, Any]) -> Iterator[tuple[list[str], int]]:
    """Each body row (its cells) of the "What we checked" tables, with its held? column."""
    for cell in nb.get("cells", []):
        text = "".join(cell.get("source", ""))
        if cell.get("cell_type") != "markdown" or "What we checked" not in text:
            continue
        lines = [line.strip() for line in text.split("What we checked", 1)[1].splitlines()]
        rows = [_CELL_SPLIT.split(line[1:-1]) for line in lines if line[:1] == line[-1:] == "|"]
        head = [c.strip().lower() for c in rows[0]] if rows else []
        for row in rows[1:] if "held?" in head else []:
            if len(row) > head.index("held?") and not set("".join(row)) <= set("-: "):
                yield [c.strip() for c in row], head.index("held?")


def checks(notebook: Notebook) -> list[Check]:
    """The rows of the chapter's "What we checked" tables, in order, with the verdicts the
    executed ``notebook`` (file or JSON) glued; empty without such a table."""
    nb = _load(notebook)
    glued = glued_values(nb)
    found = []
    for row, column in _checked_rows(nb):
        role = _GLUE_ROLE.search(row[column])
        name = role.group(1).strip() if role else None
        held = str(glued.get(name) if name else row[column]).strip().lower()
        found.append(Check(plain(row[0]), name, held if held in VERDICTS else "n/a", row[0]))
    return found


def count_checks(found: list[Check]) -> dict[str, int]:
    """How many checks held: ``{"yes": ..., "no": ..., "n/a": ...}``."""
    return {verdict: sum(c.held == verdict for c in found) for verdict in VERDICTS}


def glue_descriptions(notebook: Notebook) -> dict[str, str]:
    """Glued name -> the text that shows the value, in plain words: in a "What we checked"
    row, its measured cell up to the value (its claim for the held? verdict); in prose or a
    caption, about 90 characters of the sentence around it, marked ``[·]`` (other glued
    values show as ``…``). Values shown nowhere are left out."""
    nb = _load(notebook)
    found: dict[str, str] = {}
    for row, column in _checked_rows(nb):  # the tables first
        for index, cell in enumerate(row):
            for match in _GLUE_ROLE.finditer(cell):
                before = plain(_GLUE_ROLE.sub("…", cell[: match.start()])).rstrip(" =:,(")
                if index == column:
                    before = f"{plain(row[0])} (held?)"
                found.setdefault(match.group(1).strip(), before or plain(row[0]))
    texts = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            texts.append("".join(cell.get("source", "")))
        caption = cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("caption")
        texts += [caption] if isinstance(caption, str) else []
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
            head, tail = "…" if at > 60 else "", "…" if at + 30 < len(sentence) else ""
            found[name] = (head + sentence[max(0, at - 60) : at + 30] + tail).replace("\0", "[·]")
    return found
