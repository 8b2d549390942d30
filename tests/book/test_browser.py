"""Open the built smoke book from disk (``file://``, as ``make book`` suggests) in headless
Chromium, offline, and check what a reader sees: figures, typeset math, no remote request.

The browser is Debian's chromium driven by Selenium through Debian's chromedriver (fixtures in
``conftest.py``). Skipped when they are not installed, except under ``CI=true``. The same
book served over HTTP is checked in ``test_site.py``.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from dlnbook.pagerules import SHOW_INPUT
from tests.book.conftest import REPO
from tests.book.page_audit import AUDIT_PAGE, style_tick_points, tick_text_px

pytestmark = pytest.mark.slow

CHAPTER_PAGES = sorted(f"chapters/{p.stem}.html" for p in (REPO / "chapters").glob("*.ipynb"))
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


def test_browser_starts_without_network(browser):
    remote = [r.url for r in browser.startup_requests if not r.url.startswith(LOCAL_SCHEMES)]
    assert not remote, f"Chromium requested at start: {remote}"


@pytest.mark.parametrize("page", ["intro.html", *CHAPTER_PAGES])
def test_page_renders_offline_with_figures_and_math(file_pages, page):
    report, requests, _ = file_pages[page]
    remote = [r.url for r in requests if not r.url.startswith(LOCAL_SCHEMES)]
    assert not remote, f"{page} requested network resources: {remote}"
    failed = [(r.url, r.error) for r in requests if r.error]
    assert not failed, f"{page}: requests failed: {failed}"
    assert any(urlsplit(r.url).path.endswith("_static/mathjax/tex-chtml.js") for r in requests)
    assert report["typeset"] > 0, f"{page}: MathJax typeset no math"
    assert report["untypeset"] == 0 and report["raw"] == [], f"{page}: raw TeX left: {report}"
    if page.startswith("chapters/"):
        assert report["figures"], f"{page} shows no figure"
        broken = [f["src"] for f in report["figures"] if not f["loaded"]]
        assert not broken, f"{page}: figures did not load: {broken}"


def _toc_pages() -> list[str]:
    """Every page of the book, from ``_toc.yml`` (``chapters/01_setting`` -> ``.html``)."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]
    for entry in toc.get("chapters", []) + [
        c for part in toc.get("parts", []) for c in part.get("chapters", [])
    ]:
        files.append(entry["file"])
    return [f"{f}.html" for f in files]


def _chapter_cells(page: str) -> list[dict]:
    """Cells of the chapter notebook of a page (none for a page that is not a chapter)."""
    path = (REPO / page).with_suffix(".ipynb")
    return json.loads(path.read_text(encoding="utf-8"))["cells"] if path.is_file() else []


def _shown_inputs(page: str) -> int:
    """Code cells of a chapter whose input stays visible (tagged ``show-input``)."""
    return sum(SHOW_INPUT in c["metadata"].get("tags", []) for c in _chapter_cells(page))


def _captions(page: Path) -> set[str]:
    """The figure captions of a built page in plain text, as their alt text should read: the
    number and the link mark dropped, references as shown ("Fig. 3.3"), math as its TeX."""
    captions = set()
    for caption in re.findall(r"<figcaption>(.*?)</figcaption>", page.read_text(), re.S):
        caption = re.sub(r'<span class="caption-number">.*?</span>', "", caption)
        caption = re.sub(r'<a class="headerlink".*?</a>', "", caption)
        text = html.unescape(re.sub(r"<[^>]+>", "", caption)).replace("\\(", "").replace("\\)", "")
        captions.add(" ".join(text.split()))
    return captions


MIN_TICK_PX = 10.0  # tick labels on the page at a 1300 px window


@pytest.fixture(scope="module")
def file_pages(browser, smoke_book) -> dict[str, tuple[dict, list, dict]]:
    """Every page of the book opened once from disk at a 1300 px window: page -> what
    :meth:`Browser.inspect` reported (after MathJax), the page's requests, and what
    :data:`AUDIT_PAGE` measured. Read by the two tests below."""
    size = browser.driver.get_window_size()
    browser.driver.set_window_size(1300, 2000)
    visits = {}
    try:
        for page in _toc_pages():
            browser.open((smoke_book.html / page).as_uri())
            report = browser.inspect()  # waits for MathJax
            visits[page] = (report, browser.requests(), browser.run(AUDIT_PAGE))
    finally:
        browser.driver.set_window_size(size["width"], size["height"])
    return visits


@pytest.mark.parametrize("page", _toc_pages())
def test_page_reads_well_at_reading_width(file_pages, smoke_book, page):
    """At a 1300 px window: no TeX left as text, no MathJax error, no formula wider than its
    box; every figure has its caption as alt text (as the page reads it), is served at twice
    its displayed width unless it is an SVG, and shows tick labels of at least 10 px (an SVG's
    text measured; a PNG's from the book style's tick size, the resolution it declares and its
    scale on the page); the code of a chapter is folded except the cells tagged ``show-input``."""
    report = file_pages[page][2]
    assert report["raw"] == [], f"{page}: TeX delimiters left in the text: {report['raw']}"
    assert report["errors"] == [], f"{page}: MathJax errors: {report['errors']}"
    assert report["overflowing"] == [], f"{page}: formulas wider than their box (px): " + str(
        report["overflowing"]
    )
    captions = _captions(smoke_book.html / page)
    for figure in report["figures"]:
        name = figure["src"].rsplit("/", 1)[-1]
        assert figure["alt"] and name not in figure["alt"], f"{page}: {name} has no alt text"
        if figure["caption"]:
            assert figure["alt"] in captions, f"{page}: {name}: alt is not the caption"
        if not name.endswith(".svg"):
            assert figure["natural"] >= 2 * figure["shown"] - 1, (
                f"{page}: {name} is neither SVG nor served at twice its width: {figure}"
            )
        tick = tick_text_px(figure, style_tick_points())
        assert tick is not None, f"{page}: {name}: tick labels cannot be measured"
        assert tick >= MIN_TICK_PX, f"{page}: {name}: tick labels of {tick:.1f} px"
    if page.startswith("chapters/"):
        assert report["codeCellsShown"] == _shown_inputs(page), (
            f"{page}: {report['codeCellsShown']} code cells shown, tagged: {_shown_inputs(page)}"
        )
