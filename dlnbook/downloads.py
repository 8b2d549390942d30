"""Sphinx extension: a chapter page's download menu offers its executed notebook too.

The theme's download button (``use_download_button``) gives the notebook as committed, without
outputs (``.ipynb``). This extension copies the executed copy that the page shows (the cached
run of :mod:`dlnbook.sphinx_ext`, outputs and papermill's parameters cell included) to
``executed/<docname>.ipynb`` in the output folder and adds it to the menu as
``.ipynb (executed)``; the committed one becomes ``.ipynb (as committed)``.

Enable it after ``dlnbook.sphinx_ext`` (``sphinx.extra_extensions`` in ``_config.yml``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

__all__ = ["executed_copy", "setup"]

#: Folder of the output that holds the executed notebooks.
FOLDER = "executed"


def executed_copy(app: Sphinx, docname: str) -> Path | None:
    """The executed copy rendered for ``docname`` (a chapter), or None.

    Parameters
    ----------
    app : Sphinx
        The running application; ``dlnbook.sphinx_ext`` recorded the run's key of each chapter
        it rendered in ``app.env.dlnbook_keys``.
    docname : str
        Page name, e.g. ``"chapters/01_setting"``.

    Returns
    -------
    Path or None
        ``<cache>/<chapter>-<key[:12]>/<chapter>.ipynb`` (the run folder of
        :class:`dlnbook.runner.Plan`) when it exists.
    """
    key = getattr(app.env, "dlnbook_keys", {}).get(docname)
    if key is None:
        return None
    name = Path(docname).name
    cache = Path(app.config.dlnbook_cache_dir or Path(app.outdir).parent / "executed")
    path = cache / f"{name}-{key[:12]}" / f"{name}.ipynb"
    return path if path.is_file() else None


def add_executed_download(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """``html-page-context``: copy the page's executed notebook and add it to the menu."""
    source = executed_copy(app, pagename)
    menus = [b for b in context.get("header_buttons", []) if b.get("label") == "download-buttons"]
    if source is None or not menus:
        return
    target = Path(app.outdir) / FOLDER / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    buttons = menus[0]["buttons"]
    for button in buttons:  # the source file (a chapter's is its notebook)
        if button.get("text") == ".ipynb":
            button["text"] = ".ipynb (as committed)"
    executed = {
        "type": "link",
        "url": context["pathto"](f"{FOLDER}/{pagename}.ipynb", 1),
        "text": ".ipynb (executed)",
        "icon": "fas fa-code",
        "tooltip": "Download the executed notebook, with the outputs this page shows",
        "label": "download-executed-notebook-button",
    }
    buttons.insert(0, executed)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the handler after the theme's, which builds the download menu (Sphinx entry
    point)."""
    app.connect("html-page-context", add_executed_download, priority=900)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
