"""Files the command line adds to a finished run: a standalone page and the parameters.

The page is rendered by the book's own renderer: a Sphinx build of one document (the chapter,
prepared exactly as the book build prepares it, parameters box included) with the book's
configuration as Jupyter Book translates ``_config.yml`` (theme, MyST-NB, sphinx-proof,
numbered figures, glued values, citations, offline MathJax). Only the ``dlnbook.sphinx_ext``
extension is left out: the chapter has already run. The result is a folder, ``html/``,
holding ``<chapter>.html`` and its ``_static/`` assets; it opens offline from the disk.

Figures and statements are numbered as in the book, which numbers them continuously over
its pages (``_toc.yml`` order). A page of its own cannot link to other chapters: a
``{prf:ref}`` to a statement of another page shows the same words as in the book
(``Proposition 3``) without the link. Any other reference Sphinx cannot resolve is shown
as its label, with a warning.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from io import StringIO
from pathlib import Path
from typing import Any

from dlnbook.chapters import load_chapter
from dlnbook.runner import RUN_RECORD, Plan

__all__ = [
    "PAGE_DIR",
    "PARAMETERS_FILE",
    "book_numbering",
    "finalize_run",
    "find_book_root",
    "numbered_items",
    "write_page",
]

PARAMETERS_FILE = "parameters.json"
#: Folder of a run that holds the standalone page and its assets.
PAGE_DIR = "html"
_EXTENSION = "dlnbook.sphinx_ext"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PRF_FENCE = re.compile(r"^\s*(?:`{3,}|:{3,})\{prf:(\w+)\}")
_OPTION = re.compile(r"^\s*:(\w+):\s*(.*)$")
_PRF_REF = re.compile(r"\{prf:ref\}`([^`<>]+)`")
_BIBLIOGRAPHY = """## References

```{bibliography}
:filter: docname in docnames
```
"""


def find_book_root(chapter: str | Path) -> Path:
    """The book folder of a chapter notebook: the nearest parent holding ``_config.yml``, else
    the parent of the chapter's folder (``<book>/chapters/<chapter>.ipynb``)."""
    path = Path(chapter).resolve()
    for folder in path.parents:
        if (folder / "_config.yml").is_file():
            return folder
    return path.parent.parent


def _toc_documents(book: Path) -> list[Path]:
    """Source files of the book's pages in the order of ``_toc.yml`` (empty without one)."""
    import yaml

    toc = book / "_toc.yml"
    if not toc.is_file():
        return []
    files: list[str] = []

    def walk(entry: Any) -> None:
        if isinstance(entry, list):
            for item in entry:
                walk(item)
        elif isinstance(entry, dict):
            for key in ("root", "file"):
                if isinstance(entry.get(key), str):
                    files.append(entry[key])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key))

    walk(yaml.safe_load(toc.read_text(encoding="utf-8")))
    paths = []
    for name in files:
        for suffix in (".ipynb", ".md"):
            if (book / (name + suffix)).is_file():
                paths.append((book / (name + suffix)).resolve())
                break
    return paths


def numbered_items(path: Path) -> list[tuple[str, str | None]]:
    """What a page numbers, in order: ``(kind, label)`` for each figure and ``prf:`` statement.

    Kinds are ``"figure"`` (a code cell with ``mystnb.figure`` metadata, which displays
    exactly one image) and the statement kinds (``"theorem"``, ``"lemma"``, ...). Proofs and
    statements with ``:nonumber:`` are not numbered and not listed.
    """
    if path.suffix == ".md":
        blocks = [("markdown", path.read_text(encoding="utf-8"), {})]
    else:
        nb = json.loads(path.read_text(encoding="utf-8"))
        blocks = [
            (c.get("cell_type"), "".join(c.get("source", "")), c.get("metadata", {}))
            for c in nb.get("cells", [])
        ]
    items: list[tuple[str, str | None]] = []
    for kind, text, metadata in blocks:
        figure = metadata.get("mystnb", {}).get("figure")
        if kind == "code" and figure:
            items.append(("figure", figure.get("name")))
        if kind != "markdown":
            continue
        lines = text.splitlines()
        for i, line in enumerate(lines):
            fence = _PRF_FENCE.match(line)
            if fence is None or fence.group(1) == "proof":
                continue
            options = {}
            for option in lines[i + 1 :]:
                match = _OPTION.match(option)
                if match is None:
                    break
                options[match.group(1)] = match.group(2).strip()
            if "nonumber" not in options:
                items.append((fence.group(1), options.get("label")))
    return items


def book_numbering(book: Path, chapter: Path) -> tuple[dict[str, int], dict[str, str]]:
    """How the book numbers around one chapter.

    The book numbers figures and each kind of ``prf:`` statement continuously over its
    pages, in the order of ``_toc.yml``.

    Parameters
    ----------
    book : Path
        The book folder.
    chapter : Path
        The chapter notebook.

    Returns
    -------
    offsets : dict
        Kind -> number of items of that kind on the pages before the chapter.
    others : dict
        Label of a statement on another page -> how a reference to it reads, e.g.
        ``{"prop-step-size": "Proposition 3"}``.
    """
    counters: dict[str, int] = {}
    offsets: dict[str, int] = {}
    others: dict[str, str] = {}
    chapter = chapter.resolve()
    for path in _toc_documents(book):
        if path == chapter:
            offsets = dict(counters)
        for kind, label in numbered_items(path):
            counters[kind] = counters.get(kind, 0) + 1
            if label and path != chapter and kind != "figure":
                others[label] = f"{kind.title()} {counters[kind]}"
    return offsets, others


def _resolve_other_pages(nb: dict[str, Any], others: dict[str, str]) -> None:
    """Replace ``{prf:ref}`` roles (in markdown cells and figure captions) to statements of
    other pages by the book's words for them (``Proposition 3``): a page of its own cannot
    link there."""

    def text(match: re.Match) -> str:
        return others.get(match.group(1).strip(), match.group(0))

    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            cell["source"] = _PRF_REF.sub(text, "".join(cell.get("source", "")))
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure", {})
        if isinstance(figure.get("caption"), str):
            figure["caption"] = _PRF_REF.sub(text, figure["caption"])


def _shift_numbers(offsets: dict[str, int]) -> Any:
    """An ``env-get-updated`` handler that continues the book's numbering on the page."""

    def shift(app: Any, env: Any) -> list[str]:
        for numbers in env.toc_fignumbers.values():
            for kind, by_id in numbers.items():
                offset = offsets.get(kind, 0)
                for target, number in by_id.items():
                    by_id[target] = (number[0] + offset, *number[1:])
        return []

    return shift


def _page_config(book: Path, srcdir: Path, name: str) -> dict:
    """The book's Sphinx configuration for a build of the single document ``name``."""
    from jupyter_book.config import get_final_config

    user_yaml = book / "_config.yml"
    if not user_yaml.is_file():
        print(f"page of {name}: no {user_yaml}, using Jupyter Book's defaults", file=sys.stderr)
    config, _ = get_final_config(
        user_yaml=user_yaml if user_yaml.is_file() else None,
        cli_config={
            "master_doc": name,
            "exclude_patterns": ["_build", "**.ipynb_checkpoints"],
            "latex_individualpages": False,
        },
        sourcedir=srcdir,
        use_external_toc=False,
    )
    config = {key: value for key, value in config.items() if not key.startswith("dlnbook_")}
    config["extensions"] = [ext for ext in config.get("extensions", []) if ext != _EXTENSION]
    config["html_copy_source"] = False
    favicon = config.get("html_favicon")
    if favicon and "://" not in favicon:  # relative to the book, not to the page's sources
        config["html_favicon"] = str(book / favicon)
    return config


def _prune_mathjax(static: Path, mathjax_path: str) -> None:
    """Delete MathJax's other combined builds (``tex-svg.js``, ...; about 14 MB) next to the
    local ``mathjax_path`` (e.g. ``mathjax/tex-chtml.js``) the page loads; that one fetches
    fonts and extensions from the subfolders, which are kept."""
    entry = static / mathjax_path
    if not mathjax_path or "//" in mathjax_path or not entry.is_file():
        return
    for path in entry.parent.glob("*.js"):
        if path != entry:
            path.unlink()


def write_page(plan: Plan, executed: Path, target: Path) -> Path:
    """Render a chapter run as a standalone HTML page with the book's renderer.

    Parameters
    ----------
    plan : Plan
        The run (its chapter and parameters; the box names its folder).
    executed : Path
        The executed notebook of the run.
    target : Path
        Output folder; receives ``<chapter>.html`` and ``_static/``. Replaced if it exists.

    Returns
    -------
    Path
        The page, ``target / "<chapter>.html"``.

    Raises
    ------
    RuntimeError
        If Sphinx fails; its warnings are printed to stderr.
    """
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    from dlnbook.sphinx_ext import render_executed

    book = find_book_root(plan.chapter.path)
    name = plan.chapter.name
    nb = json.loads(render_executed(plan, executed=executed))
    offsets, others = book_numbering(book, plan.chapter.path)
    _resolve_other_pages(nb, others)
    with tempfile.TemporaryDirectory(prefix="dlnbook-page-") as tmp:
        srcdir = Path(tmp) / "src"
        srcdir.mkdir()
        config = _page_config(book, srcdir, name)
        bibfiles = config.get("bibtex_bibfiles") or []
        for bib in bibfiles:
            shutil.copyfile(book / bib, srcdir / Path(bib).name)
        config["bibtex_bibfiles"] = [Path(bib).name for bib in bibfiles]
        if bibfiles and any("{cite" in "".join(c.get("source", "")) for c in nb["cells"]):
            references = {"cell_type": "markdown", "id": "dlnbook-references", "metadata": {}}
            nb["cells"].append({**references, "source": _BIBLIOGRAPHY})
        (srcdir / f"{name}.ipynb").write_text(json.dumps(nb), encoding="utf-8")
        warnings = StringIO()
        shutil.rmtree(target, ignore_errors=True)
        try:
            with patch_docutils(None), docutils_namespace():
                app = Sphinx(
                    srcdir=srcdir,
                    confdir=None,
                    outdir=target,
                    doctreedir=Path(tmp) / "doctrees",
                    buildername="html",
                    confoverrides=config,
                    status=None,
                    warning=warnings,
                    freshenv=True,
                )
                app.connect("env-get-updated", _shift_numbers(offsets), priority=900)
                app.build()
        except Exception as exc:
            raise RuntimeError(f"rendering the page of {name} failed: {exc}") from exc
        finally:
            for line in _ANSI.sub("", warnings.getvalue()).splitlines():
                print(f"page of {name}: {line.replace(str(srcdir) + '/', '')}", file=sys.stderr)
        _prune_mathjax(target / "_static", config.get("mathjax_path", ""))
    return target / f"{name}.html"


def finalize_run(directory: Path, notebook: Path) -> None:
    """Add ``parameters.json`` and the standalone page (``html/<chapter>.html``) to a run.

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
    chapter = load_chapter(record["notebook"])
    key = record["key"]
    run_dir = directory.with_name(f"{chapter.name}-{key[:12]}")  # its name once it appears
    plan = Plan(chapter, record["parameters"], key, run_dir)
    write_page(plan, notebook, directory / PAGE_DIR)
