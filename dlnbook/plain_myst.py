"""Turn the MyST markup of an executed chapter into plain Markdown for a standalone page.

The book renders chapters with Sphinx, which resolves MyST roles (``{glue:text}``,
``{numref}``, ``{cite}``, ``{prf:ref}``) and directives (``{prf:theorem}``,
``{admonition}``). nbconvert does not know them and would print them raw. This module
rewrites a notebook so that nbconvert shows what a reader needs: glued values (taken from
the notebook's own outputs), figure numbers and captions, numbered theorem-like blocks as
quotes, citation keys in brackets.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import nbformat

__all__ = ["flatten_myst"]

_ROLE = re.compile(r"\{([\w:-]+)\}`([^`]*)`")
_FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>.*)$")
_OPTION = re.compile(r"^:([\w-]+):[ \t]*(.*)$")
_TARGET = re.compile(r"^(.*?)\s*<([^<>]+)>$")


class _Context:
    """What the roles refer to: glued values, figure numbers, labels of numbered blocks."""

    def __init__(self, nb: nbformat.NotebookNode) -> None:
        self.glue: dict[str, str] = {}
        self.figures: dict[str, int] = {}
        self.labels: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        for cell in nb.cells:
            figure = cell.get("metadata", {}).get("mystnb", {}).get("figure")
            if figure and figure.get("name"):
                self.figures[figure["name"]] = len(self.figures) + 1

    def number(self, kind: str, label: str | None) -> str:
        """Next number of a theorem-like block; registers its label for ``{prf:ref}``."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        title = f"{kind.replace('-', ' ').title()} {self.counts[kind]}"
        if label:
            self.labels[label] = title
        return title


def _glue_text(ctx: _Context, content: str) -> str:
    name, _, spec = content.partition(":")
    text = ctx.glue.get(name)
    if text is None:
        return content
    if spec:
        try:
            return format(float(text), spec)
        except ValueError:
            return text
    return text


def _role(ctx: _Context, name: str, content: str) -> str:
    target = _TARGET.match(content)
    text, key = (target.group(1), target.group(2)) if target else (None, content)
    if name.startswith("glue"):
        return _glue_text(ctx, content)
    if name == "numref":
        number = ctx.figures.get(key)
        if number is None:
            return text or key
        return (text or "Fig. {number}").replace("{number}", str(number)).replace("%s", str(number))
    if name == "prf:ref":
        return text or ctx.labels.get(key, key)
    if name.startswith("cite"):
        return "[" + ", ".join(k.strip() for k in content.split(",")) + "]"
    if name == "math":
        return f"${content}$"
    if name == "eq":
        return f"({key})"
    return text or key


def _roles(ctx: _Context, text: str) -> str:
    return _ROLE.sub(lambda m: _role(ctx, m.group(1), m.group(2)), text)


def _directive(ctx: _Context, name: str, arg: str, body: list[str]) -> list[str]:
    options: dict[str, str] = {}
    while body and _OPTION.match(body[0]):
        key, value = _OPTION.match(body[0]).groups()
        options[key] = value
        body = body[1:]
    inner = _blocks(ctx, "\n".join(body).strip("\n")).splitlines()
    if name == "math":
        return ["$$", *inner, "$$"]
    if name.startswith("prf:"):
        kind = name[4:]
        if kind == "proof" or "nonumber" in options:
            head = kind.title() + (f" ({arg})" if arg else "")
        else:
            head = ctx.number(kind, options.get("label")) + (f" ({arg})" if arg else "")
    else:
        head = arg or name.title()
    head = f"**{_roles(ctx, head)}.**"
    if any(line.lstrip().startswith("|") for line in inner):  # tables do not render in quotes
        return ["", head, "", *inner, ""]
    return [f"> {head}", ">", *(f"> {line}" if line else ">" for line in inner)]


def _blocks(ctx: _Context, text: str) -> str:
    """Rewrite the directives (fenced ``{name}`` blocks) of a markdown text, then its roles."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            out.append(_roles(ctx, lines[i]))
            i += 1
            continue
        fence, end = opening.group("fence"), i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        out.extend(_directive(ctx, opening.group("name"), opening.group("arg"), lines[i + 1 : end]))
        i = end + 1
    return "\n".join(out)


def _is_glue(output: dict[str, Any]) -> bool:
    return "scrapbook" in output.get("metadata", {})


def flatten_myst(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of an executed notebook with its MyST markup turned into plain Markdown.

    Parameters
    ----------
    nb : NotebookNode
        Executed notebook (version 4).

    Returns
    -------
    NotebookNode
        Glue outputs are removed and their values written where the text refers to them;
        each figure cell is followed by a ``Fig. N. caption`` line.
    """
    nb = copy.deepcopy(nb)
    ctx = _Context(nb)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if _is_glue(output):
                name = output["metadata"]["scrapbook"]["name"]
                prefix = output["metadata"]["scrapbook"].get("mime_prefix", "")
                text = output.get("data", {}).get(prefix + "text/plain", "")
                ctx.glue[name] = "".join(text).strip().strip("'")
        if "outputs" in cell:
            cell.outputs = [o for o in cell.outputs if not _is_glue(o)]
    for cell in nb.cells:  # a first pass numbers the blocks, for references made before them
        if cell.cell_type == "markdown":
            _blocks(ctx, cell.source)
    ctx.counts = {}
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _blocks(ctx, cell.source)
        cells.append(cell)
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure")
        if figure and figure.get("name") in ctx.figures:
            caption = _roles(ctx, figure.get("caption", ""))
            number = ctx.figures[figure["name"]]
            cells.append(nbformat.v4.new_markdown_cell(f"**Fig. {number}.** {caption}"))
    nb.cells = cells
    return nb
