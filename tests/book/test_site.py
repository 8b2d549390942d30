"""The book as a reader gets it online: served over HTTP under a sub-path, read in Chromium.

The smoke build is served at ``http://127.0.0.1:PORT/dln-book/`` (as GitHub Pages serves a
project site) and every page is visited once: no request fails or leaves the machine, every
internal link resolves, figures load, math typesets, the search page finds each chapter and
the download button returns the chapter's notebook. A mini book built with a public URL and a
repository URL shows the published book's extras (``dlnbook.publish``).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urldefrag, urlsplit

import pytest
import snowballstemmer
import yaml
from sphinx.errors import ConfigError

from dlnbook.export import SHARED_DIR
from dlnbook.publish import PREVIEW_IMAGE, check_repository_url, check_site_url
from tests.book.conftest import (
    REPO,
    SITE_PREFIX,
    Request,
    build_book,
    make_mini_book,
    serve,
    tiny_chapter,
)

CHAPTERS = sorted(p.stem for p in (REPO / "chapters").glob("*.ipynb"))
LOCAL_SCHEMES = ("data:", "blob:", "about:")
SITE_URL = "https://owner.github.io/dln-book/"
REPOSITORY_URL = "https://github.com/owner/dln-book"


# --- configuration checks (fast) -------------------------------------------------------------


def test_site_url_gets_a_trailing_slash_and_must_be_absolute():
    assert check_site_url("https://owner.github.io/dln-book") == SITE_URL
    assert check_site_url(SITE_URL) == SITE_URL
    for bad in ("owner.github.io/dln-book", "/dln-book/", "ftp://x.org/", "https://x.org/?a=1"):
        with pytest.raises(ConfigError, match="html.baseurl must be the book's public address"):
            check_site_url(bad)


def test_repository_url_must_be_a_github_repository():
    assert check_repository_url(REPOSITORY_URL + "/") == REPOSITORY_URL
    for bad in ("https://github.com/owner", "https://gitlab.com/owner/dln-book", "github.com/o/r"):
        with pytest.raises(ConfigError, match="repository.url must be a GitHub repository"):
            check_repository_url(bad)


# --- the smoke build, served -----------------------------------------------------------------


class _Anchors(HTMLParser):
    """Collects the ``id`` and ``name`` attributes of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.anchors.update(value for key, value in attrs if key in ("id", "name") and value)


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def fetch(url: str) -> tuple[int, bytes]:
    """GET a URL of the local server: status and body."""
    try:
        with _LOCAL.open(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


@dataclass
class Visit:
    """What the browser saw on one page."""

    report: dict[str, Any]
    requests: list[Request]
    served: list[tuple[str, int]]  # (path, status) the server answered meanwhile
    landed: str  # the URL shown at the end (differs after a redirect)


@pytest.fixture(scope="module")
def site_pages(browser, served_smoke_book) -> dict[str, Visit]:
    """Every HTML page of the served smoke build, visited once (page path -> what was seen)."""
    root = served_smoke_book.root
    pages = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.html")
        if p.relative_to(root).parts[0] not in ("_static", "_sources")
    )
    visits = {}
    for page in pages:
        start = len(served_smoke_book.log)
        browser.open(served_smoke_book.url + page)
        report = browser.inspect()
        visits[page] = Visit(
            report, browser.requests(), served_smoke_book.log[start:], browser.driver.current_url
        )
    return visits


@pytest.mark.slow
def test_every_page_is_visited(site_pages, served_smoke_book):
    expected = {"intro.html", "search.html", "genindex.html", "bibliography.html"}
    expected |= {f"chapters/{name}.html" for name in CHAPTERS}
    assert expected <= set(site_pages)
    # The bare address of the book (index.html) opens the introduction.
    assert site_pages["index.html"].landed == served_smoke_book.url + "intro.html"


@pytest.mark.slow
def test_no_request_fails_or_leaves_the_site(site_pages, served_smoke_book):
    for page, visit in site_pages.items():
        remote = [
            r.url
            for r in visit.requests
            if not r.url.startswith((served_smoke_book.url, *LOCAL_SCHEMES))
        ]
        assert not remote, f"{page}: requests outside the site: {remote}"
        failed = [(r.url, r.status, r.error) for r in visit.requests if r.failed]
        assert not failed, f"{page}: failed requests: {failed}"
    # The server's side, which also sees what the browser asks for itself (the favicon).
    errors = [(path, status) for path, status in served_smoke_book.log if status >= 400]
    assert not errors, f"the server answered with errors: {errors}"
    assert not [path for path, _ in served_smoke_book.log if path == "/favicon.ico"]


@pytest.mark.slow
def test_every_page_has_the_favicon(site_pages, served_smoke_book):
    for page, visit in site_pages.items():
        assert visit.report["icons"] == [served_smoke_book.url + "_static/favicon.svg"], page
    status, body = fetch(served_smoke_book.url + "_static/favicon.svg")
    assert status == 200 and body.startswith(b"<svg")


@pytest.mark.slow
def test_every_internal_link_resolves(site_pages, served_smoke_book):
    site = served_smoke_book
    anchors: dict[str, set[str] | None] = {}  # target -> its ids (None: not found)
    checked = 0
    for page, visit in site_pages.items():
        for link in visit.report["links"]:
            if not link.startswith(site.origin):
                continue
            target, fragment = urldefrag(link)
            target = target.split("?")[0]
            assert target.startswith(site.url), f"{page}: link leaves the book: {link}"
            if target not in anchors:
                status, body = fetch(target)
                anchors[target] = None
                if status == 200:
                    parser = _Anchors()
                    parser.feed(body.decode("utf-8", "replace") if target.endswith(".html") else "")
                    anchors[target] = parser.anchors
            assert anchors[target] is not None, f"{page}: broken link {link}"
            if fragment and target.endswith(".html"):
                assert fragment in anchors[target], f"{page}: no anchor #{fragment} in {target}"
            checked += 1
    assert checked > 100, f"only {checked} internal links found"


@pytest.mark.slow
def test_figures_load_and_math_typesets_on_every_page(site_pages):
    for page, visit in site_pages.items():
        report = visit.report
        assert report["untypeset"] == 0 and report["raw"] == [], f"{page}: raw TeX: {report}"
        assert report["typeset"] >= report["math"], page
        broken = [f["src"] for f in report["figures"] if not f["loaded"]]
        assert not broken, f"{page}: figures did not load: {broken}"
    for page in ["intro.html", *(f"chapters/{name}.html" for name in CHAPTERS)]:
        assert site_pages[page].report["typeset"] > 0, f"{page}: no math typeset"
    for name in CHAPTERS:
        assert site_pages[f"chapters/{name}.html"].report["figures"], f"{name}: no figure"


def search_index(html: Path) -> dict[str, Any]:
    """The search index the search page loads (``searchindex.js``)."""
    text = (html / "searchindex.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("(") + 1 : text.rindex(")")])


def unique_word(index: dict[str, Any], chapter: str) -> str:
    """A word of the chapter's own prose that the search index has for that page only."""
    page = index["docnames"].index(f"chapters/{chapter}")
    nb = json.loads((REPO / "chapters" / f"{chapter}.ipynb").read_text(encoding="utf-8"))
    prose = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    stem = snowballstemmer.stemmer("porter").stemWord  # Sphinx's English stemmer
    words = {w.lower() for w in re.findall(r"\b[A-Za-z]{6,}\b", prose)}
    own = [w for w in words if index["terms"].get(stem(w)) == page]
    assert own, f"{chapter}: no word of its prose is indexed for it alone"
    return min(own, key=lambda w: (-len(w), w))


# Waits until the search finished and the math in its results is typeset (or 20 s passed);
# returns the result links and how many formulas of the results are left untypeset.
WAIT_FOR_SEARCH = r"""
return (async () => {
  const deadline = Date.now() + 20000;
  const untypeset = () => document.querySelectorAll(
    "#search-results .math:not(:has(mjx-container))").length;
  while (Date.now() < deadline) {
    const summary = document.querySelector("#search-results .search-summary");
    if (summary && /Search finished|did not match/.test(summary.textContent)
        && untypeset() === 0) break;
    await new Promise(r => setTimeout(r, 100));
  }
  return {
    links: [...document.querySelectorAll("#search-results ul.search li a")].map(a => a.href),
    untypeset: untypeset(),
  };
})();
"""


@pytest.mark.slow
def test_search_finds_each_chapter_by_a_word_only_it_uses(browser, served_smoke_book):
    index = search_index(served_smoke_book.root)
    for chapter in CHAPTERS:
        word = unique_word(index, chapter)
        browser.open(f"{served_smoke_book.url}search.html?q={quote(word)}")
        results = browser.run(WAIT_FOR_SEARCH)
        pages = [urlsplit(url).path.removeprefix(SITE_PREFIX) for url in results["links"]]
        assert f"chapters/{chapter}.html" in pages, f"search for {word!r} found {pages}"
        assert results["untypeset"] == 0, f"search for {word!r}: raw TeX in the results"
        assert not [r for r in browser.requests() if r.failed], word
    # A chapter title with TeX in it is typeset in the results.
    browser.open(f"{served_smoke_book.url}search.html?q=layers")
    assert browser.run(WAIT_FOR_SEARCH)["untypeset"] == 0


@pytest.mark.slow
def test_download_button_returns_the_chapter_notebook(site_pages, served_smoke_book):
    for name in CHAPTERS:
        links = site_pages[f"chapters/{name}.html"].report["links"]
        committed = f"{served_smoke_book.url}_sources/chapters/{name}.ipynb"
        executed = f"{served_smoke_book.url}executed/chapters/{name}.ipynb"
        assert sorted(u for u in links if u.endswith(".ipynb")) == sorted([committed, executed])
        status, body = fetch(committed)
        assert status == 200
        # The committed notebook (no outputs) ...
        assert json.loads(body) == json.loads((REPO / "chapters" / f"{name}.ipynb").read_text())
        # ... and the executed copy the page renders, with its outputs.
        status, body = fetch(executed)
        assert status == 200
        assert any(c.get("outputs") for c in json.loads(body)["cells"])


@pytest.mark.slow
def test_page_titles_show_formulas_without_tex_delimiters(smoke_book):
    with_math = 0
    for page in smoke_book.html.rglob("*.html"):
        text = page.read_text()
        (title,) = re.findall(r"<title>([^<]*)</title>", text) or [""]
        assert "\\(" not in title and "\\)" not in title, f"{page.name}: {title}"
        heading = re.search(r"<h1>(.*?)<a class=\"headerlink\"", text)
        for tex in re.findall(r"\\\((.*?)\\\)", heading.group(1) if heading else ""):
            with_math += 1
            assert tex in title, f"{page.name}: {tex!r} missing from {title!r}"
    if not with_math:
        pytest.skip("no page heading of this book has a formula")


@pytest.mark.slow
def test_unpublished_book_has_no_site_extras(smoke_book):
    html = smoke_book.html
    assert not (html / "sitemap.xml").exists()
    assert not (html / PREVIEW_IMAGE).exists()
    page = (html / "chapters" / f"{CHAPTERS[0]}.html").read_text()
    assert 'property="og:' not in page and 'rel="canonical"' not in page
    assert "launch-buttons" not in page and "repository-button" not in page
    assert "btn-download-source-button" in page


# --- a book with its public addresses set -------------------------------------------------------


@pytest.fixture(scope="module")
def published_book(tmp_path_factory) -> Path:
    """A mini book with the repository's configuration plus a public and a repository URL."""
    root = tmp_path_factory.mktemp("published")
    book = make_mini_book(root / "book", {"01_alpha": tiny_chapter("Alpha", "fig-alpha")})
    config = yaml.safe_load((book / "_config.yml").read_text())
    config["html"]["baseurl"] = SITE_URL.rstrip("/")
    config["repository"]["url"] = REPOSITORY_URL
    config["sphinx"]["config"]["dlnbook_preview_figure"] = "fig-alpha"
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    result = build_book(book, root / "out")
    assert result.returncode == 0, result.output[-4000:]
    return result.html


@pytest.mark.slow
def test_published_book_has_buttons_built_from_the_repository_url(published_book, browser):
    with serve(published_book) as site:
        browser.open(site.url + "chapters/01_alpha.html")
        report = browser.inspect()
        requests = browser.requests()
    links = set(report["links"])
    notebook = "chapters/01_alpha.ipynb"
    assert REPOSITORY_URL in links  # repository button
    assert any(u.startswith(REPOSITORY_URL + "/issues/new?") for u in links)  # issue button
    branch = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["branch"]
    binder = f"https://mybinder.org/v2/gh/owner/dln-book/{branch}?urlpath=tree/{notebook}"
    assert binder in links
    colab = f"https://colab.research.google.com/github/owner/dln-book/blob/{branch}/{notebook}"
    assert colab in links
    assert site.url + "_sources/" + notebook in links  # download button
    # The buttons are links: reading the page requests nothing outside the site.
    remote = [r.url for r in requests if not r.url.startswith((site.url, *LOCAL_SCHEMES))]
    assert not remote, remote
    assert not [r for r in requests if r.failed]
    assert not [entry for entry in site.log if entry[1] >= 400], site.log


@pytest.mark.slow
def test_published_book_has_base_url_sitemap_and_link_preview(published_book):
    page = (published_book / "chapters" / "01_alpha.html").read_text()
    assert f'<link rel="canonical" href="{SITE_URL}chapters/01_alpha.html" />' in page
    assert f'<meta property="og:url" content="{SITE_URL}chapters/01_alpha.html" />' in page
    assert f'<meta property="og:image" content="{SITE_URL}{PREVIEW_IMAGE}" />' in page
    assert '<meta property="og:title" content="Alpha" />' in page
    # The preview image is the figure the page shows.
    preview = (published_book / PREVIEW_IMAGE).read_bytes()
    (figure,) = re.findall(r'<img[^>]+src="\.\./(_images/[^"]+\.png)"', page)
    assert preview == (published_book / figure).read_bytes()
    sitemap = (published_book / "sitemap.xml").read_text()
    locations = re.findall(r"<loc>([^<]+)</loc>", sitemap)
    assert sorted(locations) == [f"{SITE_URL}chapters/01_alpha.html", f"{SITE_URL}index.html"]


# --- the pages of `dln-book run` and `dln-book sweep`, opened from disk ------------------------

FILE_SCHEMES = ("file:", "data:", "blob:", "about:")


def folder_bytes(folder: Path) -> int:
    """What ``du`` counts: the blocks of every file and folder below ``folder``."""
    return sum(p.lstat().st_blocks * 512 for p in [folder, *folder.rglob("*")])


@pytest.mark.slow
def test_a_run_folder_is_small_and_its_page_reads_offline(chapter1_run, browser):
    assert folder_bytes(chapter1_run) <= 2_000_000, folder_bytes(chapter1_run)
    assert not (chapter1_run / "jupyter_execute").exists()
    assert sorted(p.name for p in (chapter1_run / "html").iterdir()) == [
        "01_setting.html",
        "_images",
    ]
    (shared,) = (chapter1_run.parent / SHARED_DIR).iterdir()  # theme and MathJax, once
    assert (shared / "mathjax" / "tex-chtml.js").is_file()
    browser.open((chapter1_run / "html" / "01_setting.html").as_uri())
    report = browser.inspect()
    requests = browser.requests()
    assert not [r.url for r in requests if not r.url.startswith(FILE_SCHEMES)]
    assert not [(r.url, r.error) for r in requests if r.failed]
    assert any(r.url.endswith(f"{shared.name}/mathjax/tex-chtml.js") for r in requests)
    assert report["typeset"] > 0 and report["untypeset"] == 0 and report["raw"] == []
    assert len(report["figures"]) >= 2 and all(f["loaded"] for f in report["figures"])
    banner = browser.run("return document.querySelector('.dlnbook-rerun').innerText")
    assert "dln-book run 01_setting -p steps=30 -p bottleneck_steps=30" in banner
    assert re.search(r"Checks: \d of \d held, \d did not, \d n/a", banner)
    highlighted = browser.run(
        "return [...document.querySelectorAll('tr')].filter(tr => tr.cells.length"
        " && getComputedStyle(tr.cells[0]).backgroundColor === 'rgb(255, 243, 205)')"
        ".map(tr => tr.cells[0].textContent.trim())"
    )
    assert highlighted == ["steps", "bottleneck_steps"]  # the changed parameters


SORT_STATE = """
const table = document.getElementById("points-table");
const col = [...table.tHead.rows[0].cells].findIndex(th => th.textContent === arguments[0]);
return [...table.tBodies[0].rows].map(r => r.cells[col].textContent);
"""


@pytest.mark.slow
def test_a_sweep_page_of_three_points_reads_offline_and_sorts(tmp_path, browser):
    from dlnbook.sweeppage import write_sweep
    from tests.test_sweeppage import make_sweep, values_of

    grid = [{"eta": eta} for eta in (1e-3, 1e-2, 1e-1)]
    chapter, points, folder = make_sweep(tmp_path, grid, values_of)
    write_sweep(folder, chapter, points, ["eta"])
    browser.open((folder / "index.html").as_uri())
    requests = browser.requests()
    assert not [r.url for r in requests if not r.url.startswith(FILE_SCHEMES)]
    assert not [(r.url, r.error) for r in requests if r.failed]
    images = browser.run(
        "return [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth > 0])"
    )
    assert len(images) == 3 + 2  # the figure at three points, two plots of varying values
    assert all(loaded for _, loaded in images), images
    colours = browser.run(
        "return [...document.querySelectorAll('table.checks td')].map("
        "td => [td.textContent, getComputedStyle(td).backgroundColor])"
    )
    assert {text: colour for text, colour in colours} == {
        "yes": "rgb(200, 236, 200)",
        "no": "rgb(246, 184, 184)",
        "n/a": "rgb(228, 228, 228)",
    }
    assert browser.run(SORT_STATE, "loss") == ["0.0003333", "0.003333", "0.03333"]
    header = browser.driver.find_element("xpath", "//table[@id='points-table']//th[.='loss']")
    header.click()  # ascending: already in order
    header.click()  # descending
    assert browser.run(SORT_STATE, "loss") == ["0.03333", "0.003333", "0.0003333"]
    assert browser.run(SORT_STATE, "point") == ["3", "2", "1"]
