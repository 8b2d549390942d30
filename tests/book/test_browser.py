"""Open the built smoke book from disk (``file://``, as ``make book`` suggests) in headless
Chromium, offline, and check what a reader sees: figures, typeset math, no remote request.

The browser is Debian's chromium driven by Selenium through Debian's chromedriver (fixtures in
``conftest.py``). Skipped when they are not installed, except under ``CI=true``. The same
book served over HTTP is checked in ``test_site.py``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.book.conftest import REPO

pytestmark = pytest.mark.slow

CHAPTER_PAGES = sorted(f"chapters/{p.stem}.html" for p in (REPO / "chapters").glob("*.ipynb"))
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


def test_browser_starts_without_network(browser):
    remote = [r.url for r in browser.startup_requests if not r.url.startswith(LOCAL_SCHEMES)]
    assert not remote, f"Chromium requested at start: {remote}"


@pytest.mark.parametrize("page", ["intro.html", *CHAPTER_PAGES])
def test_page_renders_offline_with_figures_and_math(browser, smoke_book, page):
    browser.open((smoke_book.html / page).as_uri())
    report = browser.inspect()
    requests = browser.requests()
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
