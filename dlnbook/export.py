"""Files the command line adds to a finished run: a standalone HTML page and the parameters.

The HTML page comes from nbconvert's ``lab`` template, which by default loads three scripts
from a CDN: require.js (only used by widgets, which the chapters do not have), mermaid (only
loaded for mermaid diagrams) and MathJax 2 (needed for every formula). Here require.js and
mermaid are left out and MathJax 3 (the SVG build shipped with ``sphinx-mathjax-offline``,
the package that already serves MathJax to the book) is inlined, so the page is one file
that renders completely offline. Images are embedded as data URIs; the CSS is inlined by
nbconvert. MyST roles and directives, which nbconvert does not know, are turned into plain
Markdown first (:mod:`dlnbook.plain_myst`); cells tagged ``remove-cell``, ``remove-input``
or ``remove-output`` are treated as the book treats them.
"""

from __future__ import annotations

import json
from pathlib import Path

from dlnbook.plain_myst import flatten_myst
from dlnbook.runner import RUN_RECORD

__all__ = ["finalize_run", "mathjax_script", "write_html"]

PARAMETERS_FILE = "parameters.json"

_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
<script>
window.MathJax = {
  tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]],
        displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
        processEscapes: true, processEnvironments: true, tags: "ams"},
  svg: {fontCache: "global"}
};
</script>
<script>{{ resources.dlnbook_mathjax }}</script>
{%- endblock html_head_js_mathjax -%}
"""


def mathjax_script() -> str:
    """Source of MathJax 3 (``tex-svg.js``) from the installed ``sphinx-mathjax-offline``.

    Raises
    ------
    RuntimeError
        If the package (a dependency of the book) is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("sphinx-mathjax-offline is not installed; run `pip install -e .`")
    root = Path(next(iter(spec.submodule_search_locations)))
    return (root / "static" / "mathjax" / "tex-svg.js").read_text(encoding="utf-8")


def write_html(notebook: str | Path, target: str | Path) -> Path:
    """Write a standalone HTML page of an executed notebook.

    Parameters
    ----------
    notebook : str or Path
        The executed ``.ipynb``.
    target : str or Path
        The ``.html`` file to write.

    Returns
    -------
    Path
        ``target``.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_cell_tags = {"remove-cell"}
    config.TagRemovePreprocessor.remove_input_tags = {"remove-input"}
    config.TagRemovePreprocessor.remove_all_outputs_tags = {"remove-output"}
    exporter = HTMLExporter(
        config=config,
        template_name="lab",
        template_file="dlnbook-standalone.html.j2",
        extra_loaders=[jinja2.DictLoader({"dlnbook-standalone.html.j2": _TEMPLATE})],
        embed_images=True,
    )
    nb = flatten_myst(nbformat.read(notebook, as_version=4))
    body, _ = exporter.from_notebook_node(
        nb, resources={"dlnbook_mathjax": mathjax_script().replace("</script", "<\\/script")}
    )
    target = Path(target)
    target.write_text(body, encoding="utf-8")
    return target


def finalize_run(directory: Path, notebook: Path) -> None:
    """Add ``parameters.json`` and ``<chapter>.html`` to a run folder.

    Called by :func:`dlnbook.runner.run_plans` in the worker, before the run folder appears.

    Parameters
    ----------
    directory : Path
        The (temporary) run folder holding ``run.json``.
    notebook : Path
        The executed notebook in that folder.
    """
    record = json.loads((directory / RUN_RECORD).read_text(encoding="utf-8"))
    text = json.dumps(record["parameters"], indent=2, default=repr)
    (directory / PARAMETERS_FILE).write_text(text + "\n", encoding="utf-8")
    write_html(notebook, notebook.with_suffix(".html"))
