"""Sphinx extension: what a published book adds, switched on by its two public addresses
(README, "Publishing the book"). ``html.baseurl``: canonical links, ``sitemap.xml``, link
previews showing the figure ``dlnbook_preview_figure``. ``repository.url``: repository, issue
and launch buttons. Always: ``index.html`` redirects with the favicon, MathJax on every page,
titles without TeX delimiters in ``<title>``, typeset search results.
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.environment import BuildEnvironment
from sphinx.errors import ConfigError
from sphinx.util import logging

__all__ = ["PREVIEW_IMAGE", "check_repository_url", "check_site_url", "setup"]

logger = logging.getLogger(__name__)

#: Where the link preview image is written, relative to the HTML output folder.
PREVIEW_IMAGE = "_static/preview.png"


def check_site_url(url: str) -> str:
    """The book's public ``http(s)`` URL, ending with ``/``, or a ``ConfigError``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"html.baseurl must be the book's public address, like "
            f"https://OWNER.github.io/dln-book/, got {url!r}"
        )
    return url if url.endswith("/") else url + "/"


def check_repository_url(url: str) -> str:
    """``https://github.com/OWNER/REPO`` without trailing ``/``, or a ``ConfigError``."""
    url = url.rstrip("/")
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if parts.scheme != "https" or parts.netloc != "github.com" or len(path) != 2:
        raise ConfigError(
            f"repository.url must be a GitHub repository, like https://github.com/OWNER/dln-book, "
            f"got {url!r}"
        )
    return url


def _configure(app: Sphinx, config: Config) -> None:
    """``config-inited``: switch the features on or off from the two addresses."""
    theme: dict[str, Any] = config.html_theme_options
    site_url = (config.html_baseurl or "").strip()
    repository_url = str(theme.get("repository_url") or "").strip()

    if site_url:
        site_url = check_site_url(site_url)
        if not config.dlnbook_preview_figure:
            raise ConfigError("html.baseurl is set: set dlnbook_preview_figure too")
        config.html_baseurl = site_url
        app.setup_extension("sphinx_sitemap")
        app.setup_extension("sphinxext.opengraph")
        config.sitemap_url_scheme = "{link}"  # no language/version folders: one book
        config.sitemap_excludes = ["search.html", "genindex.html"]
        config.ogp_site_url = site_url
        config.ogp_image = PREVIEW_IMAGE
        config.ogp_site_name = config.html_title
        config.ogp_social_cards = {"enable": False}  # no generated cards: the figure is ours
        config.ogp_enable_meta_description = True

    if repository_url:
        theme["repository_url"] = check_repository_url(repository_url)
        theme["use_repository_button"] = True
        theme["use_issues_button"] = True
    else:
        theme["launch_buttons"] = {}  # Binder and Colab links are built from the repository
    theme["use_download_button"] = True


def _figure_image(env: BuildEnvironment, name: str) -> Path | None:
    """Source path of the PNG of the figure labelled ``name``, if any."""
    labels = env.domaindata["std"]["labels"]
    if name not in labels:
        return None
    docname, label_id, _ = labels[name]
    doctree = env.get_doctree(docname)
    for figure in doctree.findall(nodes.figure):
        if label_id not in figure["ids"]:
            continue
        for image in figure.findall(nodes.image):
            if image["uri"].lower().endswith(".png"):  # relative to the source folder
                return Path(env.srcdir) / image["uri"]
    return None


def _write_preview(app: Sphinx, env: BuildEnvironment) -> None:
    """``env-updated``: copy the preview figure to :data:`PREVIEW_IMAGE` of the output."""
    if not app.config.html_baseurl or app.builder.format != "html":
        return
    name = app.config.dlnbook_preview_figure
    source = _figure_image(env, name)
    if source is None or not source.is_file():
        logger.warning(
            f"dlnbook.publish: dlnbook_preview_figure {name!r} is not a figure showing a PNG "
            "image in this book; no link preview image"
        )
        return
    target = Path(app.outdir) / PREVIEW_IMAGE
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


INDEX_REDIRECT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
{links}<meta http-equiv="refresh" content="0; url={target}">
</head>
<body><p><a href="{target}">{title}</a></p></body>
</html>
"""


def _write_index_redirect(app: Sphinx, exception: Exception | None) -> None:
    """``build-finished``, before ``sphinx-external-toc`` (which then leaves it alone): an
    ``index.html`` redirect naming the favicon and the canonical URL."""
    config = app.config
    if exception is not None or app.builder.name != "html" or config.root_doc == "index":
        return
    target = f"{config.root_doc}.html"
    links = ""
    if config.html_favicon:
        icon = config.html_favicon
        href = icon if "://" in icon else f"_static/{Path(icon).name}"
        links += f'<link rel="icon" href="{html.escape(href)}">\n'
    if config.html_baseurl:
        links += f'<link rel="canonical" href="{html.escape(config.html_baseurl + target)}">\n'
    page = INDEX_REDIRECT.format(title=html.escape(config.html_title), links=links, target=target)
    (Path(app.outdir) / "index.html").write_text(page, encoding="utf-8")


# Search results (chapter titles, some with TeX) appear after MathJax typeset the page.
TYPESET_SEARCH_RESULTS = """
document.addEventListener("DOMContentLoaded", () => {
  const results = document.getElementById("search-results");
  if (!results) return;
  let pending = false;
  const observer = new MutationObserver(() => {
    if (pending || !(window.MathJax && MathJax.typesetPromise)) return;
    pending = true;
    setTimeout(() => {
      observer.disconnect();
      MathJax.typesetPromise([results]).finally(() => {
        pending = false;
        observer.observe(results, {childList: true, subtree: true});
      });
    }, 50);
  });
  observer.observe(results, {childList: true, subtree: true});
});
"""


# Inline math as MyST renders it in a title, e.g. "a rank-<span ...>\\(k\\)</span> optimum".
_INLINE_MATH = re.compile(r'<span class="math notranslate nohighlight">\\\((.*?)\\\)</span>')


def _plain_title(
    app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    """``html-page-context``: a title's formulas without ``\\( \\)`` (nothing typesets
    ``<title>`` or the link preview)."""
    if context.get("title"):
        context["title"] = _INLINE_MATH.sub(r"\1", context["title"])


def _typeset_search_results(
    app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    if pagename == "search":
        app.add_js_file(None, body=TYPESET_SEARCH_RESULTS)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("dlnbook_preview_figure", "", "html", [str])
    app.set_html_assets_policy("always")  # MathJax on pages without equations of their own
    app.connect("config-inited", _configure)
    app.connect("env-updated", _write_preview)
    app.connect("html-page-context", _typeset_search_results)
    app.connect("html-page-context", _plain_title, priority=400)  # before the link previews
    app.connect("build-finished", _write_index_redirect, priority=400)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
