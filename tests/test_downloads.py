"""The download menu of a chapter page offers its executed notebook (dlnbook.sphinx_ext)."""

from __future__ import annotations

from types import SimpleNamespace

from dlnbook.sphinx_ext import add_executed_download


def _context():
    source = {"type": "link", "text": ".ipynb", "label": "download-source-button"}
    pdf = {"type": "javascript", "text": ".pdf", "label": "download-pdf-button"}
    menu = {"label": "download-buttons", "buttons": [source, pdf]}
    return {"header_buttons": [menu], "pathto": lambda path, resource: f"../{path}"}


def test_executed_notebook_is_copied_and_offered(tmp_path):
    key = "0123456789abcdef" * 4
    run = tmp_path / "cache" / "01_setting-0123456789ab"
    run.mkdir(parents=True)
    (run / "01_setting.ipynb").write_text('{"cells": ["executed"]}')
    app = SimpleNamespace(
        env=SimpleNamespace(dlnbook_keys={"chapters/01_setting": key}),
        config=SimpleNamespace(dlnbook_cache_dir=str(tmp_path / "cache")),
        outdir=str(tmp_path / "html"),
    )
    context = _context()
    add_executed_download(app, "chapters/01_setting", "page.html", context, None)
    copied = tmp_path / "html" / "executed" / "chapters" / "01_setting.ipynb"
    assert copied.read_text() == '{"cells": ["executed"]}'
    buttons = context["header_buttons"][0]["buttons"]
    assert [b["text"] for b in buttons] == [".ipynb (executed)", ".ipynb (as committed)", ".pdf"]
    assert buttons[0]["url"] == "../executed/chapters/01_setting.ipynb"

    other = _context()  # a page that is not a chapter keeps the theme's menu
    add_executed_download(app, "rerunning", "page.html", other, None)
    assert other == _context() | {"pathto": other["pathto"]}
