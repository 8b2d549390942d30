"""Rules applied to every chapter page when it is rendered: code folded, figures with alt text.

:func:`dlnbook.sphinx_ext.render_executed` applies :func:`apply_page_rules` to the notebook it
hands to MyST-NB, so the rules hold for every chapter without tagging its cells by hand.

- **Code folded.** Every code cell gets Jupyter Book's ``hide-input`` tag (its output stays, a
  click shows the code), except the cells that teach: those tagged :data:`SHOW_INPUT` by the
  chapter's author, and cells that already carry a ``remove-*`` or ``hide-*`` tag (the
  ``parameters`` cell is removed: the parameters box replaces it).
- **Alt text.** The image of a figure cell gets its caption as alt text (MyST-NB's
  ``mystnb.image.alt``), in plain words: math without ``$``, cross-references by their target.
- **Aspect ratio.** An image output that states its display width (a ``retina`` PNG, drawn at
  twice that size) loses its stated height, so that a column narrower than the figure scales
  it without distortion.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["SHOW_INPUT", "alt_text", "apply_page_rules"]

#: Tag of a code cell whose input stays visible on the page (the chapter's central call).
SHOW_INPUT = "show-input"

_KEEP = ("remove-cell", "remove-input", "hide-cell", "hide-input", "parameters", SHOW_INPUT)
_ROLE = re.compile(r"\{[a-z:-]+\}`([^`]*)`")


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
    their aspect ratio when scaled, in place.

    Parameters
    ----------
    nb : dict
        Notebook (JSON structure) about to be rendered.

    Returns
    -------
    dict
        ``nb`` itself.
    """
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
