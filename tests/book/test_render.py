"""A build killed while it writes pages: the next build renders the whole site again.

A tiny book of markdown pages (no chapter to execute) carries a test extension that SIGKILLs
the build when it writes a given page. The next build must give a site whose search index
lists every page, as a build from scratch does.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from dlnbook.sphinx_ext import RENDER_MARKER
from tests.book.conftest import jupyter_book_exe, make_mini_book

pytestmark = pytest.mark.slow

PAGES = [f"page{i}" for i in range(1, 7)]
KILLER = """
import os
import signal


def kill(app, pagename, templatename, context, doctree):
    if pagename == os.environ.get("KILL_AT_PAGE"):
        os.kill(os.getpid(), signal.SIGKILL)


def setup(app):
    app.connect("html-page-context", kill)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
"""


def search_pages(html: Path) -> list[str]:
    text = (html / "searchindex.js").read_text(encoding="utf-8")
    return sorted(json.loads(text[text.index("(") + 1 : text.rindex(")")])["docnames"])


def build(
    book: Path, out: Path, kill_at: str | None = None, strict: bool = True
) -> subprocess.CompletedProcess:
    path = [str(book / "ext"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    env.pop("DLNBOOK_PARAMS_FILE", None)
    if kill_at:
        env["KILL_AT_PAGE"] = kill_at
    cmd = [jupyter_book_exe(), "build", str(book), "--path-output", str(out)]
    cmd += ["-W", "--keep-going"] if strict else []
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)


@pytest.fixture
def book(tmp_path) -> Path:
    book = make_mini_book(tmp_path / "book", {})
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    toc["chapters"] = [{"file": name} for name in PAGES]
    (book / "_toc.yml").write_text(yaml.safe_dump(toc))
    for i, name in enumerate(PAGES, start=1):
        (book / f"{name}.md").write_text(f"# Page {i}\n\nWord{i} and $x_{i}$.\n")
    config = yaml.safe_load((book / "_config.yml").read_text())
    config["sphinx"].setdefault("extra_extensions", []).append("kill_at_page")
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    (book / "ext").mkdir()
    (book / "ext" / "kill_at_page.py").write_text(KILLER)
    return book


def test_a_build_killed_while_writing_pages_is_rendered_afresh(book, tmp_path):
    out = tmp_path / "out"
    html = out / "_build" / "html"
    everything = sorted(["index", *PAGES])
    killed = build(book, out, kill_at="page3")  # the first build, killed while writing
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert (html / "page1.html").is_file() and not (html / "page4.html").exists()
    assert (out / "_build" / ".doctrees" / RENDER_MARKER).is_file()
    again = build(book, out, strict=False)  # as the plain `jupyter-book build .`
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "rendering every page afresh" in again.stdout
    assert "index will be incomplete" not in again.stdout + again.stderr
    assert search_pages(html) == everything  # was: only the pages this build wrote
    assert not (out / "_build" / ".doctrees" / RENDER_MARKER).exists()
    # a build after a finished one renders nothing afresh and keeps the whole site
    for name in PAGES[:2]:
        (book / f"{name}.md").write_text((book / f"{name}.md").read_text() + "\nEdited.\n")
    last = build(book, out)
    assert last.returncode == 0 and "afresh" not in last.stdout
    assert search_pages(html) == everything
    assert "Edited." in (html / "page1.html").read_text()
