"""The standalone page of a run, rendered by the book's own Sphinx configuration (no kernel)."""

import json
import re
import shlex
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from dlnbook.chapters import load_chapter, parse_override
from dlnbook.export import (
    SHARED_DIR,
    finalize_run,
    render_run,
    rerun_banner,
    rerun_command,
    write_page,
)
from dlnbook.glued import checks, count_checks, glue_descriptions
from dlnbook.runner import plan_points, plan_runs
from tests.conftest import chapter_notebook

REPO = Path(__file__).resolve().parents[1]
# a 1x1 PNG
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
    "DwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
TEXT = (
    "# Tiny chapter\n\n"
    "By {prf:ref}`thm-tiny`, {prf:ref}`lem-first` and {cite}`nguegnang2024`, "
    "see {numref}`fig-tiny` and {doc}`01_first`; "
    "the gap is {glue:text}`gap:.1e`, and $L(W) \\ge 0$; {glue:md}`where:myst`.\n\n"
    "```{prf:theorem} Tiny\n:label: thm-tiny\n\nThe loss is {glue:text}`verdict`.\n```"
)
CHECKED = (
    "```{admonition} What we checked\n"
    "| claim | measured | criterion | held? |\n"
    "| --- | --- | --- | --- |\n"
    "| the gap is small, $g \\lvert x \\rvert$ | gap {glue:text}`gap:.1e` | $< 1$ "
    "| {glue:text}`gap-ok` |\n"
    "| the loss is bounded | {glue:text}`verdict` | bounded | {glue:text}`bounded-ok` |\n"
    "| nothing to test here | - | - | {glue:text}`skipped-ok` |\n"
    "| an identity | exact | - | n/a |\n"
    "```"
)


def glue_output(name: str, text: str, markdown: str | None = None):
    data = {"application/papermill.record/text/plain": text}
    if markdown is not None:  # a prose.Markdown sentence
        data["application/papermill.record/text/markdown"] = markdown
    return new_output(
        "display_data",
        data=data,
        metadata={"scrapbook": {"name": name, "mime_prefix": "application/papermill.record/"}},
    )


FIRST = (
    "# First chapter\n\n"
    "```{prf:theorem} First\n:label: thm-first\n\nA.\n```\n\n"
    "```{prf:lemma} First lemma\n:label: lem-first\n\nB.\n```\n\n"
    "```{prf:lemma} Unnumbered\n:label: lem-unnumbered\n:nonumber:\n\nC.\n```"
)


@pytest.fixture
def run(tmp_path):
    """The second chapter of a book with the repository's configuration, and its executed
    copy; the book's intro and first chapter hold a figure and numbered statements."""
    book = tmp_path / "book"
    (book / "chapters").mkdir(parents=True)
    shutil.copy(REPO / "_config.yml", book)
    shutil.copy(REPO / "references.bib", book)
    shutil.copytree(REPO / "_static", book / "_static")
    chapters = "".join(f"- file: chapters/{name}\n" for name in ("01_first", "02_tiny"))
    (book / "_toc.yml").write_text(f"format: jb-book\nroot: intro\nchapters:\n{chapters}")
    (book / "intro.md").write_text("# Intro\n\n```{prf:theorem} Main\n:nonumber:\n\nD.\n```\n")
    first = {"mystnb": {"figure": {"name": "fig-first", "caption": "First."}}}
    nbformat.write(
        new_notebook(cells=[new_markdown_cell(FIRST), new_code_cell("plot()", metadata=first)]),
        book / "chapters" / "01_first.ipynb",
    )
    caption = "Loss, gap {glue:text}`gap`, by {prf:ref}`thm-first`."
    figure = {"mystnb": {"figure": {"name": "fig-tiny", "caption": caption}}}
    nb = new_notebook(
        cells=[
            new_markdown_cell(TEXT),
            new_code_cell("steps = 3  # steps [>= 0]", metadata={"tags": ["parameters"]}),
            new_code_cell("glue('gap', 1.23e-4)\nglue('verdict', 'bounded')"),
            new_code_cell("plot()", metadata=figure),
            new_markdown_cell(CHECKED),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    nbformat.write(nb, book / "chapters" / "02_tiny.ipynb")
    chapter = load_chapter(book / "chapters" / "02_tiny.ipynb")
    (plan,) = plan_runs([chapter], {"02_tiny": {"steps": 2}}, tmp_path / "runs", tmp_path)
    nb.cells.insert(2, new_code_cell("steps = 2", metadata={"tags": ["injected-parameters"]}))
    nb.cells[3].outputs = [
        glue_output("gap", "0.000123"),
        glue_output("verdict", "'bounded'"),
        glue_output("gap-ok", "'yes'"),
        glue_output("bounded-ok", "'no'"),
        glue_output("skipped-ok", "'n/a'"),
        glue_output("where", "'it ends at $L^*_{4}$'", markdown="it ends at $L^*_{4}$"),
    ]
    nb.cells[4].outputs = [new_output("display_data", data={"image/png": PNG})]
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    plan.run_dir.mkdir(parents=True)
    nbformat.write(nb, plan.executed_notebook)
    return plan


def test_page_numbers_per_chapter_in_a_numbered_part(run):
    book = run.chapter.path.parent.parent
    (book / "_toc.yml").write_text(  # as the book's: its chapters in a numbered part
        "format: jb-book\nroot: intro\nparts:\n  - numbered: true\n    chapters:\n"
        "      - file: chapters/01_first\n      - file: chapters/02_tiny\n"
    )
    html = write_page(run, run.executed_notebook, run.run_dir / "html").read_text()
    assert re.search(r'<span class="caption-number">Fig\. 2\.1 </span>', html)
    assert re.search(r'<span class="std std-numref">Fig\. 2\.1</span>', html)
    assert re.search(r'<span class="caption-number">Theorem 2\.1 </span>', html)
    assert re.search(r">Theorem 2\.1</a>, Lemma 1\.1 and", html)  # lem-first: chapter 1's
    assert "by Theorem 1.1." in html
    assert '<h1><span class="section-number">2. </span>Tiny chapter' in html  # headings too
    assert re.findall(r'class="section-number">([0-9.]+) ', html) == ["2."]  # references: none
    # the figure's alt text: its caption as the page reads it, references resolved
    assert re.findall(r'<img alt="([^"]*)"', html) == ["Loss, gap 0.000123, by Theorem 1.1."]


def test_page_shows_what_the_book_shows(run, capfd):
    page = write_page(run, run.executed_notebook, run.run_dir / "html")
    assert page == run.run_dir / "html" / "02_tiny.html"
    html = page.read_text()
    assert "Tiny chapter" in html and "Parameters of this run" in html
    assert re.search(r'<span class="pre">2</span></code> \(default', html)  # the box
    assert "proof theorem admonition" in html  # sphinx-proof's theorem box
    # numbered as in the book: continuing after the figure and theorem of the first chapter
    assert re.search(r'<span class="caption-number">Fig\. 2 </span>', html)
    assert re.search(r'<span class="std std-numref">Fig\. 2</span>', html)
    assert re.search(r'<span class="caption-number">Theorem 2 </span>', html)
    assert re.search(r">Theorem 2</a>, Lemma 1 and", html)  # lem-first: another page, no link
    glued = '<span class="pasted-text">{}</span>'
    assert f"Loss, gap {glued.format('0.000123')}, by Theorem 1." in html  # glued values
    assert f"the gap is {glued.format('1.2e-04')}" in html
    assert f"The loss is {glued.format('bounded')}." in html
    assert "and <em>First chapter</em>;" in html  # another page: its title, not a link
    assert ">NRT24</a>]" in html and "Nguegnang" in html  # citation and its reference entry
    assert 'class="math notranslate nohighlight"' in html
    # a glued Markdown sentence: its math typeset like the page's own
    assert 'it ends at <span class="math notranslate nohighlight">\\(L^*_{4}\\)</span>' in html
    assert "{numref}" not in html and "{glue" not in html and "steps = 2" not in html
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert images and all((page.parent / src).is_file() for src in images)
    # the theme and MathJax are shared by the runs folder, linked from the page
    (shared,) = (run.run_dir.parent / SHARED_DIR).iterdir()
    assert f'src="../../{SHARED_DIR}/{shared.name}/mathjax/tex-chtml.js"' in html
    assert not (shared / "mathjax" / "tex-svg.js").exists()  # pruned
    for ref in re.findall(r'(?:src|href)="([^"#]+?)(?:\?[^"]*)?"', html):
        if "://" not in ref:
            assert (page.parent / ref).exists(), ref  # every local reference resolves
    remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(?:https?:)?//[^"]*"', html)
    assert not remote, remote
    assert capfd.readouterr().err == ""  # no warnings


def test_page_warns_about_what_it_cannot_render(run, capfd):
    nb = nbformat.read(run.chapter.path, as_version=4)
    nb.cells[0].source += "\n\nSee {prf:ref}`thm-elsewhere` and {unknownrole}`x`."
    nbformat.write(nb, run.chapter.path)
    write_page(run, run.executed_notebook, run.run_dir / "html")
    err = capfd.readouterr().err
    assert "page of 02_tiny: " in err
    assert "label 'thm-elsewhere' not found" in err
    assert "unknownrole" in err


def test_run_folder_holds_one_page_and_shares_the_assets(run, tmp_path):
    """Two runs of a runs folder: each gets one page and its images, no Sphinx site; the
    theme and MathJax are stored once."""
    (other,) = plan_points(run.chapter, [{"steps": 5}], run.run_dir.parent, tmp_path)
    other.run_dir.mkdir()
    shutil.copy(run.executed_notebook, other.executed_notebook)
    for plan in (run, other):
        page = render_run(plan)
        assert sorted(p.name for p in page.parent.iterdir()) == ["02_tiny.html", "_images"]
        assert (plan.run_dir / "parameters.json").is_file()
        html = page.read_text()
        for gone in ("searchindex.js", "genindex.html", 'href="search.html"', "_sources/"):
            assert gone not in html, gone
        # the download button serves the executed notebook of the run
        assert 'href="../02_tiny.ipynb" download' in html
        size = sum(p.stat().st_size for p in plan.run_dir.rglob("*") if p.is_file())
        assert size < 300_000, size
    shared = list((run.run_dir.parent / SHARED_DIR).iterdir())
    assert len(shared) == 1 and (shared[0] / "mathjax" / "tex-chtml.js").is_file()
    assert sorted(p.name for p in run.run_dir.parent.iterdir()) == sorted(
        [SHARED_DIR, run.run_dir.name, other.run_dir.name]
    )


def test_rerun_banner_names_the_changes_the_command_and_the_checks(run):
    page = write_page(run, run.executed_notebook, run.run_dir / "html").read_text()
    banner = page[page.index('dlnbook-rerun admonition">') : page.index("Parameters of this")]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", banner))
    assert "Changed from the book: steps = 2 (book: 3)" in text
    assert "Reproduce: dln-book run 02_tiny -p steps=2" in text
    assert "Checks: 1 of 4 held, 1 did not, 2 n/a" in text
    assert "Did not hold: the loss is bounded." in text
    # the changed parameter is highlighted in the box
    box = page[page.index("Parameters of this run") :]
    assert re.search(r"<strong><code[^>]*><span class=\"pre\">steps</span></code></strong>", box)


def test_rerun_command_reproduces_the_parameters(tmp_path):
    source = "\n".join(
        [
            "steps = 3  # steps [>= 0]",
            'name = "x"  # a name',
            "depths = [2]  # depths",
            "eta = 0.1  # step size",
            "flag = True  # a switch",
        ]
    )
    path = tmp_path / "02_tiny.ipynb"
    nbformat.write(chapter_notebook("# Tiny", source), path)
    chapter = load_chapter(path)
    changes = {"steps": 7, "name": "a b", "depths": [2, 3], "eta": 1e-3, "flag": False}
    (plan,) = plan_points(chapter, [changes], tmp_path / "r", tmp_path)
    command = rerun_command(plan)
    words = shlex.split(command)
    assert words[:3] == ["dln-book", "run", "02_tiny"]
    overrides = dict(parse_override(w) for w in words[4::2])
    assert words[3::2] == ["-p"] * len(changes)
    assert overrides == changes
    (same,) = plan_points(chapter, [overrides], tmp_path / "r", tmp_path)
    assert same.key == plan.key
    (default,) = plan_runs([chapter], {}, tmp_path / "r", tmp_path)
    assert rerun_command(default) == "dln-book run 02_tiny"
    assert "nothing (the book's default parameters)" in rerun_banner(default, {"cells": []})


def test_checks_read_the_held_column_and_the_glued_verdicts(run):
    found = checks(run.executed_notebook)
    assert [(c.name, c.held) for c in found] == [
        ("gap-ok", "yes"),
        ("bounded-ok", "no"),
        ("skipped-ok", "n/a"),
        (None, "n/a"),
    ]
    assert found[0].claim == "the gap is small, g | x |"
    assert count_checks(found) == {"yes": 1, "no": 1, "n/a": 2}
    # a verdict the run did not glue counts as n/a, not as held
    nb = nbformat.read(run.executed_notebook, as_version=4)
    nb.cells[3].outputs = nb.cells[3].outputs[:3]
    assert [c.held for c in checks(nb)] == ["yes", "n/a", "n/a", "n/a"]
    assert checks({"cells": []}) == []


def test_glued_values_are_described_by_the_text_that_shows_them(run):
    described = glue_descriptions(run.executed_notebook)
    assert described["gap-ok"] == "the gap is small, g | x | (held?)"
    assert described["verdict"] == "the loss is bounded"  # the table, before the prose
    assert described["gap"] == "gap"
    prose = "First. All runs end after {glue:text}`a`, {glue:text}`b:.2g` and $\\eta$.\n\nNext"
    described = glue_descriptions({"cells": [{"cell_type": "markdown", "source": prose}]})
    assert described == {
        "a": "All runs end after [·], … and η",
        "b": "All runs end after …, [·] and η",
    }


def test_finalize_renders_the_page_only_in_the_runs_folder(run, tmp_path):
    """On the client, in the hidden sibling that becomes the run folder: parameters and page.
    In a worker's scratch folder: the parameters only, nothing of the client is read."""
    record = {
        "chapter": run.chapter.name,
        "notebook": str(run.chapter.path),
        "key": run.key,
        "parameters": run.parameters,
    }
    scratch = tmp_path / "scratch" / "run"
    hidden = run.run_dir.with_name(f".{run.run_dir.name}.tmp-1-0123abcd")
    for folder in (scratch, hidden):
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps(record))
        shutil.copy(run.executed_notebook, folder / run.executed_notebook.name)
    record["notebook"] = str(tmp_path / "not-on-this-machine.ipynb")  # a client's path
    (scratch / "run.json").write_text(json.dumps(record))
    finalize_run(scratch, scratch / run.executed_notebook.name)
    assert json.loads((scratch / "parameters.json").read_text()) == run.parameters
    assert not (scratch / "html").exists()
    finalize_run(hidden, hidden / run.executed_notebook.name)
    assert json.loads((hidden / "parameters.json").read_text()) == run.parameters
    page = (hidden / "html" / "02_tiny.html").read_text()
    (shared,) = (run.run_dir.parent / SHARED_DIR).iterdir()
    assert f'src="../../{SHARED_DIR}/{shared.name}/mathjax/tex-chtml.js"' in page


@pytest.mark.parametrize("config", ["missing", "auto"])
def test_page_never_executes_the_notebook_again(run, tmp_path, config):
    """Jupyter Book's default (``auto``) would run a notebook with a cell lacking outputs in
    a new kernel; the page shows the run's outputs, whatever the book's configuration."""
    book_config = run.chapter.path.parents[1] / "_config.yml"
    if config == "missing":
        book_config.unlink()
    else:
        book_config.write_text(book_config.read_text().replace('"off"', '"auto"'))
    marker = tmp_path / "executed-by-the-page"
    cell = new_code_cell(f"open({str(marker)!r}, 'w')")
    for path in (run.chapter.path, run.executed_notebook):
        nb = nbformat.read(path, as_version=4)
        nb.cells.insert(1, cell)  # before any cell that fails outside the run
        nbformat.write(nb, path)
    write_page(run, run.executed_notebook, run.run_dir / "html")
    assert not marker.exists()
