"""Files the command line adds to a finished run: ``parameters.json`` and a standalone page.

The page is rendered on the client (where the book is) by a Sphinx build of one document, the
chapter as the book shows it (:mod:`dlnbook.pagerules`) opened by the rerun banner, with the
book's configuration as Jupyter Book translates ``_config.yml``, without ``dlnbook.sphinx_ext``
(the chapter has run). A run folder gets ``html/<chapter>.html`` and its images (0.1–0.5 MB);
the theme and MathJax (about 12 MB) are stored once per runs folder, ``runs/_static/<digest>/``.
The page opens offline, has no search and no index, and its download button serves the run's
executed notebook. Figures and statements are numbered as in the book (continuously over the
pages of ``_toc.yml``); a ``{prf:ref}`` to another page reads as in the book (``Proposition
3``) without a link; any other reference Sphinx cannot resolve shows its label, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from io import StringIO
from pathlib import Path
from typing import Any

from dlnbook.chapters import load_chapter
from dlnbook.glued import checks, count_checks
from dlnbook.pagerules import fmt_value, render_executed, rerun_command
from dlnbook.rundirs import prune_stale, publish_run
from dlnbook.runner import RUN_RECORD, Plan

__all__ = [
    "PAGE_DIR",
    "PARAMETERS_FILE",
    "SHARED_DIR",
    "book_numbering",
    "finalize_run",
    "render_run",
]
__all__ += ["rerun_banner", "rerun_command", "shared_assets", "write_page"]

PARAMETERS_FILE = "parameters.json"
#: Folder of a run that holds the standalone page and its assets.
PAGE_DIR = "html"
#: Folder of a runs folder holding the assets (theme, MathJax) its pages share.
SHARED_DIR = "_static"
_EXTENSION = "dlnbook.sphinx_ext"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: A ``prf:`` directive's kind and its option lines (``:label: x``), in MyST markdown.
_PRF_BLOCK = re.compile(
    r"^[ \t]*(?:`{3,}|:{3,})\{prf:(\w+)\}.*\n((?:[ \t]*:\w+:.*(?:\n|$))*)", re.M
)
_OPTION = re.compile(r"^[ \t]*:(\w+):[ \t]*(.*)$", re.M)
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
    from sphinx_external_toc.api import FileItem
    from sphinx_external_toc.parsing import parse_toc_yaml

    if not (book / "_toc.yml").is_file():
        return []
    site = parse_toc_yaml(book / "_toc.yml")

    def walk(doc: str) -> list[str]:
        subs = [i for sub in site[doc].subtrees for i in sub.items if isinstance(i, FileItem)]
        return [doc, *(name for item in subs for name in walk(item))]

    found = [
        book / f"{name}{suffix}" for name in walk(site.root.docname) for suffix in (".ipynb", ".md")
    ]
    return [path.resolve() for path in found if path.is_file()]


def numbered_items(path: Path) -> list[tuple[str, str | None]]:
    """What a page (``.md`` or ``.ipynb``) numbers, in order: ``(kind, label)`` for each figure
    cell (kind ``"figure"``) and ``prf:`` statement (``"theorem"``, ...; proofs and statements
    with ``:nonumber:`` are not numbered)."""
    if path.suffix == ".md":
        cells = [{"cell_type": "markdown", "source": path.read_text(encoding="utf-8")}]
    else:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    items: list[tuple[str, str | None]] = []
    for cell in cells:
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure")
        if cell.get("cell_type") == "code" and figure:
            items.append(("figure", figure.get("name")))
        if cell.get("cell_type") == "markdown":
            for kind, block in _PRF_BLOCK.findall("".join(cell.get("source", ""))):
                options = dict(_OPTION.findall(block))
                if kind != "proof" and "nonumber" not in options:
                    items.append((kind, options.get("label", "").strip() or None))
    return items


def book_numbering(book: Path, chapter: Path) -> tuple[dict[str, int], dict[str, str]]:
    """How the book (folder ``book``) numbers around the notebook ``chapter``: figures and
    each kind of ``prf:`` statement continuously over the pages of ``_toc.yml``.

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
    config["nb_execution_mode"] = "off"  # the page shows the run; never a kernel of its own
    favicon = config.get("html_favicon")
    if favicon and "://" not in favicon:  # relative to the book, not to the page's sources
        config["html_favicon"] = str(book / favicon)
    return config


def _prune_static(static: Path, mathjax_path: str) -> None:
    """Delete what a standalone page never loads from its ``_static`` folder: MathJax's other
    combined builds (``tex-svg.js``, ...; about 14 MB) next to the local ``mathjax_path``
    (e.g. ``mathjax/tex-chtml.js``; it fetches fonts and extensions from the subfolders,
    which are kept), and the source maps (``*.map``) of the theme's scripts and styles."""
    entry = static / mathjax_path
    if mathjax_path and "//" not in mathjax_path and entry.is_file():
        for path in entry.parent.glob("*.js"):
            if path != entry:
                path.unlink()
    for path in static.rglob("*.map"):
        path.unlink()


def _tree_files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def shared_assets(files: dict[str, bytes], shared: Path) -> Path:
    """Store the assets of a page (``files``: relative path -> contents of its ``_static``
    folder) once in ``shared/<digest>`` (e.g. ``runs/_static/<digest>``, returned), named
    after the SHA-256 of the paths and contents and written in one atomic step when it does
    not exist: pages of one book configuration share it, another gets its own."""
    digest = hashlib.sha256()
    for rel, data in sorted(files.items()):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    folder = shared / digest.hexdigest()[:16]
    if not (folder / ".complete").is_file():
        prune_stale(shared)
        publish_run(folder, {**files, ".complete": b""}, replace=folder.exists())
    return folder


_STATIC_REF = re.compile(r'((?:src|href)=")_static/')
_DROP = re.compile(
    r'\s*<link rel="(?:index|search)"[^>]*>|\s*<script src="searchindex\.js"></script>'
)
#: The page has no search and no index: hide the theme's search buttons and field; the
#: rows of changed parameters (name in bold) are highlighted in the parameters box.
_PAGE_STYLE = (
    "<style>.search-button, .search-button-field, .bd-search, #pst-search-dialog"
    " {display: none !important}\n"
    ".dlnbook-rerun .admonition-title {font-weight: bold}\n"
    "tr:has(> td:first-child strong) > td {background: #fff3cd !important}</style>\n"
)


def _standalone(html: str, static: str, notebook: str) -> str:
    """A page of the one-document Sphinx build made standalone: assets from ``static`` (a
    relative URL), no links to the search and index pages that do not exist, and the
    download button serving ``notebook`` (the executed notebook, relative URL)."""
    html = _STATIC_REF.sub(lambda m: f"{m.group(1)}{static}/", html)
    html = _DROP.sub("", html)
    html = html.replace('href="_sources/"', f'href="{notebook}" download')
    return html.replace("</head>", _PAGE_STYLE + "</head>", 1)


def rerun_banner(plan: Plan, nb: dict[str, Any]) -> str:
    """MyST markdown of the banner that opens a rerun page (an ``admonition``, class
    ``dlnbook-rerun``): the parameters that differ from the book's, the ``dln-book run``
    command that reproduces the page and how many rows of the chapter's "What we checked"
    table held (the glued verdicts of ``nb``, the notebook the page renders)."""
    defaults = plan.chapter.defaults
    changed = [
        f"`{name}` = {fmt_value(value)} (book: {fmt_value(defaults.get(name))})"
        for name, value in plan.parameters.items()
        if value != defaults.get(name)
    ]
    found = checks(nb)
    counts = count_checks(found)
    if found:
        held = (
            f"{counts['yes']} of {len(found)} held, {counts['no']} did not, "
            f"{counts['n/a']} n/a (table *What we checked* at the end)."
        )
        failed = [c.markdown for c in found if c.held == "no"]
        if failed:
            held += " Did not hold: " + "; ".join(failed) + "."
    else:
        held = "this chapter has no *What we checked* table."
    lines = [
        "This page is a rerun of the chapter, not the book's page.",
        "",
        "- **Changed from the book:** "
        + ("; ".join(changed) if changed else "nothing (the book's default parameters)."),
        f"- **Reproduce:** `{rerun_command(plan)}`",
        f"- **Checks:** {held}",
    ]
    body = "\n".join(lines)
    head = f"````{{admonition}} Rerun: {plan.run_dir.name}\n:class: important dlnbook-rerun"
    return f"{head}\n\n{body}\n````\n"


def write_page(
    plan: Plan,
    executed: Path,
    target: Path,
    book: Path | None = None,
    shared: Path | None = None,
) -> Path:
    """Render a chapter run as one standalone HTML page with the book's renderer.

    Runs where the book is (the client). ``target`` (replaced) receives ``<chapter>.html``
    and its images (``_images/``); the theme and MathJax are stored once in ``shared``
    (:func:`shared_assets`) and linked relative to ``plan.run_dir / PAGE_DIR``, so ``target``
    may be a temporary folder that becomes that one.

    Parameters
    ----------
    plan : Plan
        The run (chapter, parameters, key and final run folder).
    executed : Path
        The executed notebook of the run.
    target : Path
        Output folder.
    book : Path, optional
        The book folder; by default the one holding the chapter (:func:`find_book_root`).
    shared : Path, optional
        Folder of the shared assets; default ``plan.run_dir.parent / "_static"``.

    Returns
    -------
    Path
        The page, ``target / "<chapter>.html"``.

    Raises
    ------
    RuntimeError
        If Sphinx fails; its warnings are printed to stderr.
    """
    book = find_book_root(plan.chapter.path) if book is None else Path(book)
    shared = plan.run_dir.parent / SHARED_DIR if shared is None else Path(shared)
    name, final = plan.chapter.name, plan.run_dir / PAGE_DIR
    nb, offsets = _page_notebook(plan, executed, book)
    with tempfile.TemporaryDirectory(prefix="dlnbook-page-") as tmp:
        outdir = Path(tmp) / "out"
        config = _sphinx_page(nb, name, book, offsets, Path(tmp))
        _prune_static(outdir / "_static", config.get("mathjax_path", ""))
        assets = shared_assets(_tree_files(outdir / "_static"), shared)
        static = os.path.relpath(assets, final).replace(os.sep, "/")
        notebook = os.path.relpath(plan.executed_notebook, final).replace(os.sep, "/")
        page = (outdir / f"{name}.html").read_text(encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        (target / f"{name}.html").write_text(_standalone(page, static, notebook), "utf-8")
        if (outdir / "_images").is_dir():
            shutil.copytree(outdir / "_images", target / "_images")
    return target / f"{name}.html"


def _page_notebook(plan: Plan, executed: Path, book: Path) -> tuple[dict, dict[str, int]]:
    """The notebook of a run's page (the book's, opened by the rerun banner, references to
    other pages in words) and the book's numbering offsets before the chapter."""
    nb = json.loads(render_executed(plan, executed=executed))
    box = next(i for i, c in enumerate(nb["cells"]) if c.get("id") == "dlnbook-parameters")
    banner = {"cell_type": "markdown", "id": "dlnbook-rerun", "metadata": {}}
    nb["cells"].insert(box, {**banner, "source": rerun_banner(plan, nb)})
    offsets, others = book_numbering(book, plan.chapter.path)
    _resolve_other_pages(nb, others)
    return nb, offsets


def _sphinx_page(
    nb: dict[str, Any], name: str, book: Path, offsets: dict[str, int], tmp: Path
) -> dict:
    """Build the notebook ``nb`` as the one document of a Sphinx site in ``tmp / "out"``,
    with the book's configuration (returned) and numbering; warnings go to stderr."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    srcdir = tmp / "src"
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
    try:
        with patch_docutils(None), docutils_namespace():
            app = Sphinx(
                srcdir=srcdir,
                confdir=None,
                outdir=tmp / "out",
                doctreedir=tmp / "doctrees",
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
    return config


def render_run(plan: Plan, folder: Path | None = None, book: Path | None = None) -> Path:
    """Add ``parameters.json`` and the standalone page (``html/<chapter>.html``, returned) to
    the run's folder or to ``folder``, the one about to become it (on the client, where the
    book is: ``book``, by default the one holding the chapter)."""
    folder = plan.run_dir if folder is None else Path(folder)
    text = json.dumps(plan.parameters, indent=2, default=repr)
    (folder / PARAMETERS_FILE).write_text(text + "\n", encoding="utf-8")
    executed = folder / plan.executed_notebook.name
    return write_page(plan, executed, folder / PAGE_DIR, book=book)


def finalize_run(directory: Path, notebook: Path) -> None:
    """The ``finalize`` hook of a run: add ``parameters.json`` to ``directory`` (holding
    ``run.json`` and the executed ``notebook``), and the page (:func:`render_run`) when it
    is in the runs folder (the run folder, or its hidden sibling ``.<chapter>-<hash>.tmp-…``
    that the client renames into place): that is the client, which has the chapter and the
    book. In a worker's scratch folder nothing of the client is opened."""
    record = json.loads((directory / RUN_RECORD).read_text(encoding="utf-8"))
    text = json.dumps(record["parameters"], indent=2, default=repr)
    (directory / PARAMETERS_FILE).write_text(text + "\n", encoding="utf-8")
    name = f"{record['chapter']}-{record['key'][:12]}"
    if directory.name != name and not directory.name.startswith(f".{name}.tmp-"):
        return  # not in the runs folder: a worker
    chapter = load_chapter(record["notebook"])
    plan = Plan(chapter, record["parameters"], record["key"], directory.with_name(name))
    render_run(plan, directory)
