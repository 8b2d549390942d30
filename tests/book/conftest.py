"""Fixtures of the book tests: building (mini) books with jupyter-book in temporary folders,
serving a built book over HTTP under a sub-path, and reading it in headless Chromium."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tests.conftest import once_per_session

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "profiles" / "smoke.yml"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Build:
    """Result of one ``jupyter-book build`` run."""

    returncode: int
    output: str
    seconds: float
    build_dir: Path

    @property
    def html(self) -> Path:
        return self.build_dir / "html"

    @property
    def executed(self) -> Path:
        return self.build_dir / "executed"

    @property
    def started(self) -> list[str]:
        """Chapters the build executed (from the progress lines)."""
        return re.findall(r"dlnbook: (\S+): started", self.output)


def jupyter_book_exe() -> str:
    exe = Path(sys.executable).with_name("jupyter-book")
    found = str(exe) if exe.exists() else shutil.which("jupyter-book")
    if not found:
        pytest.fail("jupyter-book is not installed in this environment")
    return found


def build_book(
    source: Path, output: Path, params_file: Path | None = None, timeout: float = 900
) -> Build:
    """Run ``jupyter-book build SOURCE --path-output OUTPUT -W --keep-going``."""
    env = dict(os.environ)
    env.pop("DLNBOOK_PARAMS_FILE", None)
    if params_file is not None:
        env["DLNBOOK_PARAMS_FILE"] = str(params_file)
    cmd = [jupyter_book_exe(), "build", str(source), "--path-output", str(output)]
    start = time.monotonic()
    proc = subprocess.run(
        [*cmd, "-W", "--keep-going"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    seconds = time.monotonic() - start
    output_text = _ANSI.sub("", proc.stdout + "\n" + proc.stderr)
    return Build(proc.returncode, output_text, seconds, output / "_build")


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory) -> Build:
    """The repository's book built once per test session with the smoke profile into a
    temporary folder. Under pytest-xdist (``make test``) the first worker that needs it builds
    it into the session's shared temporary folder while the others wait on a lock, and every
    worker reads the same build; tests must not write into it."""
    with once_per_session(tmp_path_factory, "smoke-book") as out:
        record = out.with_suffix(".json")
        if record.is_file():
            saved = json.loads(record.read_text())
            result = Build(**{**saved, "build_dir": Path(saved["build_dir"])})
        else:
            out.mkdir()
            result = build_book(REPO, out, SMOKE)
            record.write_text(json.dumps({**vars(result), "build_dir": str(result.build_dir)}))
    assert result.returncode == 0, f"smoke build failed:\n{result.output[-6000:]}"
    return result


def make_mini_book(root: Path, chapters: dict[str, nbformat.NotebookNode]) -> Path:
    """A book with the repository's configuration and static files, the given chapters and its
    own copy of the ``dlncore`` sources as the hashed library folder (so tests can edit it)."""
    root.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    config["sphinx"]["config"]["dlnbook_core_dir"] = str(root / "core")
    (root / "_config.yml").write_text(yaml.safe_dump(config))
    toc = {
        "format": "jb-book",
        "root": "index",
        "chapters": [{"file": f"chapters/{name}"} for name in chapters],
    }
    (root / "_toc.yml").write_text(yaml.safe_dump(toc))
    (root / "index.md").write_text("# Mini book\n\nA test book.\n")
    shutil.copy(REPO / "references.bib", root / "references.bib")
    shutil.copytree(REPO / "_static", root / "_static")  # the favicon the configuration names
    shutil.copytree(REPO / "dlncore", root / "core", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "chapters").mkdir(exist_ok=True)
    for name, nb in chapters.items():
        nbformat.write(nb, root / "chapters" / f"{name}.ipynb")
    return root


def read_chapter(name: str) -> nbformat.NotebookNode:
    """A repository chapter notebook."""
    return nbformat.read(REPO / "chapters" / f"{name}.ipynb", as_version=4)


def tiny_chapter(title: str, figure: str) -> nbformat.NotebookNode:
    """A self-contained chapter following the conventions: title, parameters, one figure."""
    plot = (
        "from pathlib import Path\n\n"
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n\n"
        "values = np.random.default_rng(seed).standard_normal(steps).cumsum()\n"
        "fig, ax = plt.subplots()\n"
        "ax.plot(values)\n"
        'Path("figures").mkdir(exist_ok=True)\n'
        f'fig.savefig("figures/{figure}.png")\n'
        f'fig.savefig("figures/{figure}.svg")'
    )
    cells = [
        new_markdown_cell(f"# {title}\n\nA random walk $x_k$; see {{numref}}`{figure}`."),
        new_code_cell(
            "seed = 0  # random seed [>= 0]\nsteps = 20  # number of steps [>= 0]",
            metadata={"tags": ["parameters"]},
        ),
        new_code_cell(plot, metadata={"mystnb": {"figure": {"name": figure, "caption": title}}}),
    ]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return new_notebook(cells=cells, metadata={"kernelspec": kernelspec})


# ---------------------------------------------------------------------------------------------
# Serving a built book as a project site is served: under a sub-path of a local HTTP server.

SITE_PREFIX = "/dln-book/"


@dataclass
class Site:
    """A book served at ``url`` (``http://127.0.0.1:PORT/dln-book/``).

    ``log`` holds ``(path, status)`` of every request the server answered, in order,
    including those a browser makes outside the book (e.g. ``/favicon.ico``).
    """

    url: str
    root: Path
    log: list[tuple[str, int]] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return self.url[: -len(SITE_PREFIX) + 1]


class _SubPathHandler(SimpleHTTPRequestHandler):
    """Serves ``directory`` under :data:`SITE_PREFIX`; anything else is a 404."""

    def __init__(self, *args: Any, site: Site, **kwargs: Any) -> None:
        self.site = site
        super().__init__(*args, directory=str(site.root), **kwargs)

    def translate_path(self, path: str) -> str:
        if not path.startswith(SITE_PREFIX):
            return str(self.site.root / "__outside_the_site__")
        return super().translate_path(path[len(SITE_PREFIX) - 1 :])

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.site.log.append((self.path, int(code)))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass


@contextmanager
def serve(root: Path) -> Iterator[Site]:
    """Serve the folder ``root`` at ``http://127.0.0.1:<free port>/dln-book/``."""
    site = Site(url="", root=root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_SubPathHandler, site=site))
    site.url = f"http://127.0.0.1:{server.server_address[1]}{SITE_PREFIX}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="session")
def served_smoke_book(smoke_book) -> Iterator[Site]:
    """The smoke build served under ``/dln-book/``."""
    with serve(smoke_book.html) as site:
        yield site


# ---------------------------------------------------------------------------------------------
# A real browser: Debian's chromium driven by Selenium through Debian's chromedriver.

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Runs in the page once it loaded: waits for MathJax where the page loads it, then reports the
# figures of the article, the math of the whole page (navigation included), TeX left in the
# article's text, the links and the icons of the page.
INSPECT_PAGE = r"""
return (async () => {
  const usesMathJax = document.querySelector("script[src*='mathjax']") !== null;
  const deadline = Date.now() + 30000;
  while (usesMathJax && !(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    if (Date.now() > deadline) return {error: "MathJax did not start"};
    await new Promise(r => setTimeout(r, 100));
  }
  if (usesMathJax) await MathJax.startup.promise;
  const article = document.querySelector("article") || document.body;
  const text = article.cloneNode(true);
  text.querySelectorAll("pre, mjx-container, script").forEach(e => e.remove());
  return {
    figures: [...article.querySelectorAll("figure img, .cell_output img")].map(
      i => ({src: i.getAttribute("src"), loaded: i.complete && i.naturalWidth > 0})),
    math: document.querySelectorAll(".math").length,
    typeset: document.querySelectorAll("mjx-container").length,
    untypeset: document.querySelectorAll(".math:not(:has(mjx-container))").length,
    raw: ["\\(", "\\)", "\\[", "$$"].filter(s => text.textContent.includes(s)),
    links: [...document.querySelectorAll("a[href]")].map(a => a.href),
    icons: [...document.querySelectorAll("link[rel~=icon]")].map(l => l.href),
  };
})();
"""


@dataclass
class Request:
    """One network request of a page, from Chromium's performance log."""

    url: str
    status: int | None = None  # HTTP status; None while no response came
    error: str | None = None  # Chromium's net error, e.g. ``net::ERR_FILE_NOT_FOUND``

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.status is not None and self.status >= 400)


class Browser:
    """Headless Chromium under Selenium, recording the network requests of every page."""

    def __init__(self, chromium: str, chromedriver: str, profile_dir: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile_dir}"):
            options.add_argument(arg)
        # Start on about:blank: the default new tab page loads the search engine's start page.
        startup = {"restore_on_startup": 4, "startup_urls": ["about:blank"]}
        options.add_experimental_option("prefs", {"session": startup})
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        # An explicit driver path: Selenium Manager (which would download one) never runs.
        service = Service(executable_path=chromedriver, log_output=subprocess.DEVNULL)
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.set_script_timeout(60)
        self.driver.set_page_load_timeout(60)
        self.startup_requests = self.requests()

    def open(self, url: str) -> None:
        """Load ``url`` and wait until a page without ``<meta http-equiv="refresh">`` (the
        page itself or where it redirects) has loaded; :meth:`requests` starts afresh."""
        from selenium.common.exceptions import JavascriptException
        from selenium.webdriver.support.wait import WebDriverWait

        def settled(driver: Any) -> bool:
            return driver.execute_script(
                "return document.readyState === 'complete'"
                " && !document.querySelector('meta[http-equiv=refresh i]')"
            )

        self.driver.get_log("performance")
        self.driver.get(url)
        wait = WebDriverWait(self.driver, 30, 0.05, ignored_exceptions=(JavascriptException,))
        wait.until(settled)

    def run(self, script: str, *args: Any) -> Any:
        """Run JavaScript in the page (a returned promise is awaited)."""
        return self.driver.execute_script(script, *args)

    def inspect(self) -> dict[str, Any]:
        """Figures, math (after MathJax finished), links and icons of the open page."""
        report = self.run(INSPECT_PAGE)
        if "error" in report:
            raise AssertionError(f"{self.driver.current_url}: {report['error']}")
        return report

    def requests(self) -> list[Request]:
        """Every request made since the page was opened or this was last called."""
        found: dict[str, Request] = {}
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message["params"]
            method = message["method"]
            if method == "Page.frameStartedNavigating":  # a navigation, before its request
                found.setdefault(params["loaderId"], Request(params["url"]))
            elif method == "Network.requestWillBeSent":
                found[params["requestId"]] = Request(params["request"]["url"])
            elif method == "Network.responseReceived" and params["requestId"] in found:
                found[params["requestId"]].status = params["response"]["status"]
            elif method == "Network.loadingFailed":
                if params["requestId"] not in found and params.get("canceled"):
                    continue  # a request of the previous page, cancelled by leaving it
                request = found.setdefault(params["requestId"], Request("<unknown>"))
                request.error = params["errorText"]
        return list(found.values())

    def close(self) -> None:
        self.driver.quit()


def find_browser() -> tuple[str, str] | None:
    """Paths of Chromium and its WebDriver, or None when one of them is missing."""
    chromium = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    chromedriver = shutil.which("chromedriver")
    return (chromium, chromedriver) if chromium and chromedriver else None


@pytest.fixture(scope="session")
def browser(tmp_path_factory) -> Iterator[Browser]:
    """One headless Chromium for the whole session, with a fresh profile. Skipped when
    Chromium or chromedriver is missing, except under ``CI=true`` where that fails."""
    found = find_browser()
    if found is None:
        message = (
            "Chromium or chromedriver is not installed "
            "(Debian: `apt-get install chromium chromium-driver`)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the browser checks (.ci/run installs them)")
        pytest.skip(f"{message}: browser checks skipped")
    instance = Browser(*found, tmp_path_factory.mktemp("chromium-profile"))
    yield instance
    instance.close()
