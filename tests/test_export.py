"""The standalone page of a run, rendered by the book's own Sphinx configuration (no kernel)."""

import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from dlnbook.chapters import load_chapter
from dlnbook.export import write_page
from dlnbook.runner import plan_runs

# Sphinx runs in this process; an extension of Jupyter Book uses a docutils API it deprecates
pytestmark = pytest.mark.filterwarnings("ignore:nodes.Node.traverse:PendingDeprecationWarning")
REPO = Path(__file__).resolve().parents[1]
# a 1x1 PNG
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
    "DwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
TEXT = (
    "# Tiny chapter\n\n"
    "By {prf:ref}`thm-tiny`, {prf:ref}`lem-first` and {cite}`nguegnang2024`, "
    "see {numref}`fig-tiny`; "
    "the gap is {glue:text}`gap:.1e`, and $L(W) \\ge 0$.\n\n"
    "```{prf:theorem} Tiny\n:label: thm-tiny\n\nThe loss is {glue:text}`verdict`.\n```"
)


def glue_output(name: str, text: str):
    return new_output(
        "display_data",
        data={"application/papermill.record/text/plain": text},
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
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    nbformat.write(nb, book / "chapters" / "02_tiny.ipynb")
    chapter = load_chapter(book / "chapters" / "02_tiny.ipynb")
    (plan,) = plan_runs([chapter], {"02_tiny": {"steps": 2}}, tmp_path / "runs", tmp_path)
    nb.cells.insert(2, new_code_cell("steps = 2", metadata={"tags": ["injected-parameters"]}))
    nb.cells[3].outputs = [glue_output("gap", "0.000123"), glue_output("verdict", "'bounded'")]
    nb.cells[4].outputs = [new_output("display_data", data={"image/png": PNG})]
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    plan.run_dir.mkdir(parents=True)
    nbformat.write(nb, plan.executed_notebook)
    return plan


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
    assert ">NRT24</a>]" in html and "Nguegnang" in html  # citation and its reference entry
    assert 'class="math notranslate nohighlight"' in html
    assert "{numref}" not in html and "{glue" not in html and "steps = 2" not in html
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert images and all((page.parent / src).is_file() for src in images)
    assert (page.parent / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert not (page.parent / "_static" / "mathjax" / "tex-svg.js").exists()  # pruned
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
