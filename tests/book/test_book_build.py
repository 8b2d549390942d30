"""The book pipeline end to end: smoke build, cache behaviour, failing chapters (slow)."""

from __future__ import annotations

import json
import re
import shutil

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell

from dlnbook.chapters import discover_chapters, load_profile
from tests.book.conftest import REPO, SMOKE, build_book, make_mini_book, tiny_chapter
from tests.test_prose import warnings_shown

pytestmark = pytest.mark.slow

CHAPTERS = [c.name for c in discover_chapters(REPO / "chapters")]


def figure_names(nb_path) -> list[str]:
    """Names of the ``mystnb.figure`` cells of a notebook."""
    nb = json.loads(nb_path.read_text())
    names = []
    for cell in nb["cells"]:
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure")
        if figure:
            names.append(figure["name"])
    return names


def test_toc_lists_every_chapter():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    entries = toc.get("chapters", []) + [
        e for part in toc.get("parts", []) for e in part["chapters"]
    ]
    files = [entry["file"] for entry in entries]
    assert [f"chapters/{name}" for name in CHAPTERS] == [
        f for f in files if f.startswith("chapters/")
    ]


def test_smoke_build_executes_every_chapter_with_its_figures(smoke_book):
    assert sorted(smoke_book.started) == sorted(CHAPTERS)
    smoke = load_profile(SMOKE)
    for name in CHAPTERS:
        (run_dir,) = smoke_book.executed.glob(f"{name}-*")
        record = json.loads((run_dir / "run.json").read_text())
        for param, value in smoke.get(name, {}).items():
            assert record["parameters"][param] == value
        assert record["seconds"] < 60, f"{name} is too slow for the smoke profile"
        figures = figure_names(REPO / "chapters" / f"{name}.ipynb")
        assert figures, f"{name} has no mystnb.figure cell"
        for fig in figures:
            for ext in ("png", "svg"):
                path = run_dir / "figures" / f"{fig}.{ext}"
                assert path.is_file() and path.stat().st_size > 0, f"{name}: {path} missing"
        executed = nbformat.read(run_dir / f"{name}.ipynb", as_version=4)
        images = [
            out
            for cell in executed.cells
            if cell.cell_type == "code"
            for out in cell.outputs
            if "image/png" in out.get("data", {})
        ]
        assert images, f"{name}: the executed notebook shows no figure"
        assert warnings_shown(run_dir / f"{name}.ipynb") == [], name


def test_smoke_pages_show_parameters_figures_and_references(smoke_book):
    for name in CHAPTERS:
        page = (smoke_book.html / "chapters" / f"{name}.html").read_text()
        assert "Parameters of this run" in page
        assert "tag_injected-parameters" not in page and "tag_parameters" not in page
        assert re.search(r'<img[^>]+src="\.\./_images/[^"]+\.png"', page), name
        assert re.search(r'<span class="caption-number">Fig\. \d+\.\d+', page), name
        assert re.search(r'<span class="std std-numref">Fig\. \d+\.\d+</span>', page), name
        assert 'class="math notranslate nohighlight"' in page, name
    intro = (smoke_book.html / "intro.html").read_text()
    assert "proof theorem admonition" in intro
    bibliography = (smoke_book.html / "bibliography.html").read_text()
    assert "Nguegnang" in bibliography and "10.1186/s13662-023-03797-x" in bibliography


def test_smoke_site_is_offline(smoke_book):
    assert (smoke_book.html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    for page in smoke_book.html.rglob("*.html"):
        text = page.read_text()
        remote_scripts = re.findall(r'<script[^>]+src="(?:https?:)?//[^"]*"', text)
        remote_styles = re.findall(r'<link[^>]+href="(?:https?:)?//[^"]*\.css[^"]*"', text)
        assert not remote_scripts and not remote_styles, (page, remote_scripts, remote_styles)
    assert "_static/mathjax/tex-chtml.js" in (smoke_book.html / "intro.html").read_text()


def test_hidden_folders_and_outputs_are_not_in_the_book(smoke_book):
    paths = [p.relative_to(smoke_book.html).as_posix() for p in smoke_book.html.rglob("*")]
    for forbidden in (".venv", ".pytest_cache", "_build", "README", "runs/"):
        assert not [p for p in paths if forbidden in p], forbidden
    # of the execution cache, only the executed notebooks offered for download
    downloads = {f"executed/chapters/{name}.ipynb" for name in CHAPTERS}
    executed = {p for p in paths if "executed" in p}
    assert executed == downloads | {"executed", "executed/chapters"}
    pages = {p for p in paths if p.endswith(".html")}
    expected = {f"chapters/{name}.html" for name in CHAPTERS} | {"intro.html"}
    assert expected <= pages


def test_no_change_rebuild_executes_nothing_and_is_fast(smoke_book, tmp_path):
    # in a copy: other tests (other pytest-xdist workers) read the smoke build meanwhile
    copy = shutil.copytree(smoke_book.build_dir.parent, tmp_path / "copy", symlinks=True)
    again = build_book(REPO, copy, SMOKE)
    assert again.returncode == 0, again.output[-4000:]
    assert again.started == []
    assert all(f"dlnbook: {name}: up to date" in again.output for name in CHAPTERS)
    assert again.seconds < 30, f"no-change rebuild took {again.seconds:.1f}s"


def test_cache_reexecutes_exactly_the_affected_chapters(tmp_path):
    a, b = "01_alpha", "02_beta"
    chapters = {a: tiny_chapter("Alpha", "fig-alpha"), b: tiny_chapter("Beta", "fig-beta")}
    book = make_mini_book(tmp_path / "book", chapters)
    profile = tmp_path / "profile.yml"
    profile.write_text(yaml.safe_dump({a: {"steps": 10}}))
    out = tmp_path / "out"

    def build():
        result = build_book(book, out, profile)
        assert result.returncode == 0, result.output[-4000:]
        return result

    assert sorted(build().started) == [a, b]

    # nothing changed but a comment in the library: nothing runs again. The chapters import no
    # dlncore module: their keys cover the core (dlnbook/cachekey.py), which dlncore/network.py
    # is part of. (No change at all: test_no_change_rebuild_executes_nothing_and_is_fast.)
    with (book / "core" / "network.py").open("a") as f:
        f.write('\n# a comment in the library sources\n"""and a docstring-like string"""\n')
    assert build().started == []
    with (book / "core" / "network.py").open("a") as f:
        f.write("\nLIBRARY_VERSION = 2\n")  # a change to the library code
    assert sorted(build().started) == [a, b]

    profile.write_text(yaml.safe_dump({a: {"steps": 10, "seed": 7}}))
    assert build().started == [a]
    page = (out / "_build" / "html" / "chapters" / f"{a}.html").read_text()
    assert re.search(r'<span class="pre">7</span></code> \(default', page), "box not updated"

    nb = chapters[b]
    nb.cells.append(new_code_cell("print('an edited notebook')"))
    nbformat.write(nb, book / "chapters" / f"{b}.ipynb")
    assert build().started == [b]

    # prose is not a reason to rerun (and the run just made is cached)
    nb.cells[0].source = "# Beta\n\nA corrected sentence about $x_k$."
    nb.cells[2].metadata["mystnb"]["figure"]["caption"] = "Beta, with a better caption"
    nbformat.write(nb, book / "chapters" / f"{b}.ipynb")
    assert build().started == []
    page = (out / "_build" / "html" / "chapters" / f"{b}.html").read_text()
    assert "A corrected sentence" in page and "Beta, with a better caption" in page
    assert "<pre><span></span>an edited notebook" in page  # the output, from the cached run


def test_failing_chapter_fails_the_build_and_is_not_cached(tmp_path):
    good, bad = "01_alpha", "02_beta"
    broken = tiny_chapter("Beta", "fig-beta")
    broken.cells.append(new_code_cell("raise RuntimeError('planted failure 42')"))
    book = make_mini_book(
        tmp_path / "book", {good: tiny_chapter("Alpha", "fig-alpha"), bad: broken}
    )
    out = tmp_path / "out"

    first = build_book(book, out)
    assert first.returncode != 0
    assert f"chapter {bad} failed" in first.output
    assert "RuntimeError: planted failure 42" in first.output
    executed = out / "_build" / "executed"
    assert list(executed.glob(f"{bad}-*")) == []
    assert len(list(executed.glob(f"{good}-*"))) == 1
    assert len(list((executed / "failed").glob(f"{bad}-*.ipynb"))) == 1  # named after the run

    second = build_book(book, out)
    assert second.returncode != 0
    assert second.started == [bad]
    assert "planted failure 42" in second.output


def test_profile_value_out_of_range_fails_before_anything_runs(tmp_path):
    book = make_mini_book(tmp_path / "book", {"01_alpha": tiny_chapter("Alpha", "fig-alpha")})
    profile = tmp_path / "bad.yml"
    profile.write_text("01_alpha:\n  steps: -5\n")
    result = build_book(book, tmp_path / "out", params_file=profile)
    assert result.returncode != 0
    assert "parameter 'steps' of chapter '01_alpha' must be >= 0, got -5" in result.output
    assert result.started == []
    assert not list((tmp_path / "out" / "_build" / "executed").glob("01_alpha-*"))


def test_figure_cell_showing_two_images_fails_with_a_clear_message(tmp_path):
    nb = tiny_chapter("Alpha", "fig-alpha")
    nb.cells[-1].source += "\nfig"  # displays the figure a second time
    book = make_mini_book(tmp_path / "book", {"01_alpha": nb})
    message = "01_alpha: figure cell 'fig-alpha' displays 2 images"
    result = build_book(book, tmp_path / "out")
    assert result.returncode != 0
    assert message in result.output
    again = build_book(book, tmp_path / "out")  # a failed build must not leave a passing cache
    assert again.returncode != 0
    assert again.started == []
    assert message in again.output
