"""A run's own page: ``parameters.json`` and ``html/<chapter>.html``, the chapter as the book
shows it (:mod:`dlnbook.pagerules`) opened by the rerun banner, built alone by Sphinx with the
book's configuration and numbering; theme and MathJax are stored once per runs folder."""

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
from dlnbook.glued import checks, count_checks, figure_cells
from dlnbook.pagerules import caption_alt_texts, fmt_value, render_executed, rerun_command
from dlnbook.rundirs import prune_stale, publish_run
from dlnbook.runner import RUN_RECORD, Plan

__all__ = ["PAGE_DIR", "PARAMETERS_FILE", "SHARED_DIR", "book_numbering", "finalize_run"]
__all__ += ["render_run", "rerun_banner", "rerun_command", "shared_assets", "write_page"]

PARAMETERS_FILE = "parameters.json"
#: Folder of a run that holds the standalone page and its images.
PAGE_DIR = "html"
#: Folder of a runs folder holding the assets (theme, MathJax) its pages share.
SHARED_DIR = "_static"
_EXTENSION = "dlnbook.sphinx_ext"
#: A ``prf:`` directive's kind and its option lines (``:label: x``), in MyST markdown.
_PRF_BLOCK = re.compile(
    r"^[ \t]*(?:`{3,}|:{3,})\{prf:(\w+)\}.*\n((?:[ \t]*:\w+:.*(?:\n|$))*)", re.M
)
_OPTION = re.compile(r"^[ \t]*:(\w+):[ \t]*(.*)$", re.M)
_PRF_REF = re.compile(r"\{prf:ref\}`([^`<>]+)`")
_DOC_REF = re.compile(r"\{doc\}`([^`]+)`")
#: The references of a run's page: a rubric, not a section (the book's chapter has none).
_BIBLIOGRAPHY = (
    "```{rubric} References\n```\n\n```{bibliography}\n:filter: docname in docnames\n```\n"
)
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


def book_numbering(book: Path, chapter: Path) -> tuple[int | None, dict[str, int], dict[str, str]]:
    """How the book numbers figures and each kind of ``prf:`` statement (not proofs or
    ``:nonumber:`` ones) around ``chapter``, as Sphinx does over the pages of ``_toc.yml``: per
    chapter in a numbered part (``Fig. 2.1``), continuously over the other pages (``Fig. 3``).

    Returns
    -------
    number : int or None
        The chapter's number in its numbered part, None when it is not in one.
    offsets : dict
        Kind (``"figure"``, ``"theorem"``, ...) -> how many the unnumbered pages before the
        chapter hold (its numbers continue theirs when ``number`` is None).
    others : dict
        Label of a statement on another page -> its name in the book (``"Proposition 3.1"``).
    """
    from sphinx_external_toc.parsing import parse_toc_yaml

    toc = Path(book) / "_toc.yml"
    site = parse_toc_yaml(toc) if toc.is_file() else None
    numbers = {  # each numbered part counts its chapters from 1
        str(item): i
        for part in (site.root.subtrees if site else [])
        if part.numbered
        for i, item in enumerate(part.items, start=1)
    }
    counters: dict[tuple[str, int | None], int] = {}
    own: int | None = None
    offsets: dict[str, int] = {}
    others: dict[str, str] = {}
    for doc in site or []:  # the pages, in order
        path = (toc.parent / f"{doc}.ipynb").resolve()
        if path.is_file():
            nb = json.loads(path.read_text(encoding="utf-8"))
        elif (path := path.with_suffix(".md")).is_file():
            nb = {"cells": [{"cell_type": "markdown", "source": path.read_text("utf-8")}]}
        else:
            continue
        number = numbers.get(doc)
        if path == chapter.resolve():
            own = number
            offsets = {kind: n for (kind, prefix), n in counters.items() if prefix is None}
        items = [("figure", "") for _ in figure_cells(nb)]
        for cell in nb.get("cells", []):
            if cell.get("cell_type") == "markdown":
                for kind, block in _PRF_BLOCK.findall("".join(cell.get("source", ""))):
                    options = dict(_OPTION.findall(block))
                    if kind != "proof" and "nonumber" not in options:
                        items.append((kind, options.get("label", "").strip()))
        for kind, label in items:
            count = counters[kind, number] = counters.get((kind, number), 0) + 1
            if label and path != chapter.resolve():
                others[label] = f"{kind.title()} " + (f"{number}.{count}" if number else f"{count}")
    return own, offsets, others


def _page_config(book: Path, srcdir: Path, name: str) -> dict:
    """The book's Sphinx configuration for a build of the single document ``name``."""
    from jupyter_book.config import get_final_config

    user_yaml = book / "_config.yml"
    if not user_yaml.is_file():
        print(f"page of {name}: no {user_yaml}, using Jupyter Book's defaults", file=sys.stderr)
    config, _ = get_final_config(
        user_yaml=user_yaml if user_yaml.is_file() else None,
        cli_config={"master_doc": name, "latex_individualpages": False},
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


def shared_assets(static: Path, shared: Path, mathjax_path: str = "") -> Path:
    """Store a page's ``static`` folder once, as ``shared/<digest>`` (returned; SHA-256 of its
    paths and contents) in one atomic step, so that pages of one book configuration share
    it; without what a page never loads: source maps and MathJax's builds beside the local
    ``mathjax_path`` (e.g. ``mathjax/tex-chtml.js``; about 14 MB)."""
    entry = static / mathjax_path
    local = mathjax_path and "//" not in mathjax_path and entry.is_file()
    other_builds = [path for path in entry.parent.glob("*.js") if path != entry] if local else []
    for path in [*other_builds, *static.rglob("*.map")]:
        path.unlink()
    paths = [path for path in static.rglob("*") if path.is_file()]
    files = {path.relative_to(static).as_posix(): path.read_bytes() for path in paths}
    digest = hashlib.sha256()
    for rel, data in sorted(files.items()):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    folder = shared / digest.hexdigest()[:16]
    if not (folder / ".complete").is_file():
        prune_stale(shared)
        publish_run(folder, {**files, ".complete": b""}, replace=folder.exists())
    return folder


def rerun_banner(plan: Plan, nb: dict[str, Any]) -> str:
    """MyST admonition (class ``dlnbook-rerun``) that opens a run's page: the parameters that
    differ from the book's, the command that reproduces the run and how many rows of the
    "What we checked" table of ``nb`` (the page's notebook) held."""
    defaults = plan.chapter.defaults
    changed = [
        f"`{name}` = {fmt_value(value)} (book: {fmt_value(defaults.get(name))})"
        for name, value in plan.parameters.items()
        if value != defaults.get(name)
    ]
    found = checks(nb)
    counts = count_checks(found)
    held = "this chapter has no *What we checked* table."
    if found:
        held = (
            f"{counts['yes']} of {len(found)} held, {counts['no']} did not, "
            f"{counts['n/a']} n/a (table *What we checked* at the end)."
        )
    if counts["no"]:
        held += " Did not hold: " + "; ".join(c.markdown for c in found if c.held == "no") + "."
    lines = [
        f"````{{admonition}} Rerun: {plan.run_dir.name}\n:class: important dlnbook-rerun\n",
        "This page is a rerun of the chapter, not the book's page.\n",
        "- **Changed from the book:** "
        + ("; ".join(changed) if changed else "nothing (the book's default parameters)."),
        f"- **Reproduce:** `{rerun_command(plan)}`",
        f"- **Checks:** {held}",
        "````\n",
    ]
    return "\n".join(lines)


def write_page(plan: Plan, executed: Path, target: Path) -> Path:
    """Render the run ``plan`` (its ``executed`` notebook) as one standalone page with the
    renderer of the book that holds the chapter (the nearest folder with a ``_config.yml``).

    ``target`` (replaced) receives ``<chapter>.html`` (returned) and its ``_images/``; the
    theme and MathJax go to :func:`shared_assets` of the runs folder, linked relative to
    ``plan.run_dir / PAGE_DIR`` (``target`` may be a temporary folder that becomes it).

    Raises
    ------
    RuntimeError
        If Sphinx fails; its warnings are printed to stderr.
    """
    chapter = plan.chapter.path.resolve()
    books = [folder for folder in chapter.parents if (folder / "_config.yml").is_file()]
    book = books[0] if books else chapter.parent.parent  # <book>/chapters/<chapter>.ipynb
    name, final = plan.chapter.name, plan.run_dir / PAGE_DIR
    nb = json.loads(render_executed(plan, executed=executed))
    box = next(i for i, c in enumerate(nb["cells"]) if c.get("id") == "dlnbook-parameters")
    banner = {"cell_type": "markdown", "id": "dlnbook-rerun", "metadata": {}}
    nb["cells"].insert(box, {**banner, "source": rerun_banner(plan, nb)})
    number, offsets, others = book_numbering(book, chapter)
    # a page of its own cannot link to another page: such a {prf:ref} reads as in the book
    nb = json.loads(_PRF_REF.sub(lambda m: others.get(m[1].strip(), m[0]), json.dumps(nb)))
    nb = json.loads(_DOC_REF.sub(lambda m: _doc_text(chapter.parent, m[1], m[0]), json.dumps(nb)))
    with tempfile.TemporaryDirectory(prefix="dlnbook-page-") as tmp:
        out = Path(tmp) / "out"
        config = _sphinx_page(nb, name, book, (number, offsets), Path(tmp))
        mathjax = config.get("mathjax_path", "")
        assets = shared_assets(out / "_static", plan.run_dir.parent / SHARED_DIR, mathjax)
        static = os.path.relpath(assets, final).replace(os.sep, "/")
        notebook = os.path.relpath(plan.executed_notebook, final).replace(os.sep, "/")
        html = (out / f"{name}.html").read_text(encoding="utf-8")
        html = _STATIC_REF.sub(lambda m: f"{m.group(1)}{static}/", html)
        html = _DROP.sub("", html).replace('href="_sources/"', f'href="{notebook}" download')
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        html = html.replace("</head>", _PAGE_STYLE + "</head>", 1)
        (target / f"{name}.html").write_text(html, encoding="utf-8")
        if (out / "_images").is_dir():
            shutil.copytree(out / "_images", target / "_images")
    return target / f"{name}.html"


def _doc_text(folder: Path, ref: str, role: str) -> str:
    """What a ``{doc}`` reference to another page reads as on a page of its own: its own text
    (``{doc}`text <page>```) or the title of the notebook ``page`` in ``folder``; the ``role``
    unchanged if there is no such notebook."""
    text, _, target = ref.partition("<")
    if target:
        return text.strip()
    path = folder / f"{ref.strip()}.ipynb"
    if not path.is_file():
        return role
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    heads = ("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "markdown")
    titles = (line[2:].strip() for head in heads for line in head.splitlines() if line[:2] == "# ")
    return f"*{next(titles, ref.strip())}*"


def _section_numbers(node: Any, stack: list[int]) -> dict[str, tuple[int, ...]]:
    """Anchor -> section number of the headings in a page's table of contents ``node``,
    counting from ``stack`` as Sphinx does under a numbered toctree (the title gets the
    chapter's number, its sections ``(number, i)``, ...)."""
    from docutils import nodes
    from sphinx import addnodes

    numbers: dict[str, tuple[int, ...]] = {}
    for child in node.children:
        if isinstance(child, nodes.bullet_list):
            numbers |= _section_numbers(child, [*stack, 0])
        elif isinstance(child, nodes.list_item | addnodes.only):
            numbers |= _section_numbers(child, stack)  # shares ``stack``: siblings count on
        elif isinstance(child, addnodes.compact_paragraph) and "skip_section_number" not in child:
            stack[-1] += 1
            numbers[child[0]["anchorname"]] = tuple(stack)
    return numbers


def _sphinx_page(
    nb: dict, name: str, book: Path, numbering: tuple[int | None, dict[str, int]], tmp: Path
) -> dict:
    """Build ``nb`` as the one document of a Sphinx site in ``tmp / "out"`` with the book's
    configuration (returned) and numbered as in the book (``numbering``: the chapter's number
    in its numbered part, else the offsets, kind -> items on the pages before, of
    :func:`book_numbering`); warnings go to stderr."""
    number, offsets = numbering
    from sphinx.application import Sphinx
    from sphinx.util.console import strip_escape_sequences
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    def shift_numbers(app: Sphinx, env: Any) -> list[str]:  # number as the book does
        for numbers in env.toc_fignumbers.values():
            for kind, by_id in numbers.items():
                for target, n in by_id.items():
                    by_id[target] = (
                        (number, *n) if number else (n[0] + offsets.get(kind, 0), *n[1:])
                    )
        if number:  # headings as in a numbered part: "2.", "2.1."
            env.toc_secnumbers[name] = _section_numbers(env.tocs[name], [number - 1])
        return []

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
            dirs = (srcdir, None, tmp / "out", tmp / "doctrees", "html", config)
            app = Sphinx(*dirs, status=None, warning=warnings, freshenv=True)
            app.connect("env-get-updated", shift_numbers, priority=900)
            app.connect("doctree-resolved", caption_alt_texts)
            app.build()
    except Exception as exc:
        raise RuntimeError(f"rendering the page of {name} failed: {exc}") from exc
    finally:
        for line in strip_escape_sequences(warnings.getvalue()).splitlines():
            print(f"page of {name}: {line.replace(str(srcdir) + '/', '')}", file=sys.stderr)
    return config


def render_run(plan: Plan, folder: Path | None = None) -> Path:
    """Write ``parameters.json`` and the page (``html/<chapter>.html``, returned) into the
    run's folder, or into ``folder`` about to become it (where the book is: the client)."""
    folder = plan.run_dir if folder is None else Path(folder)
    text = json.dumps(plan.parameters, indent=2, default=repr)
    (folder / PARAMETERS_FILE).write_text(text + "\n", encoding="utf-8")
    return write_page(plan, folder / plan.executed_notebook.name, folder / PAGE_DIR)


def finalize_run(directory: Path, notebook: Path) -> None:
    """The ``finalize`` hook of a run (``directory`` holds ``run.json`` and the executed
    ``notebook``): its ``parameters.json``, and its page (:func:`render_run`) when it is in
    the runs folder, as the run folder or the hidden sibling ``.<chapter>-<hash>.tmp-…`` the
    client renames into place; in a worker's scratch folder nothing of the client is read."""
    record = json.loads((directory / RUN_RECORD).read_text(encoding="utf-8"))
    text = json.dumps(record["parameters"], indent=2, default=repr)
    (directory / PARAMETERS_FILE).write_text(text + "\n", encoding="utf-8")
    name = f"{record['chapter']}-{record['key'][:12]}"
    if directory.name == name or directory.name.startswith(f".{name}.tmp-"):
        chapter = load_chapter(record["notebook"])
        plan = Plan(chapter, record["parameters"], record["key"], directory.with_name(name))
        render_run(plan, directory)
