"""Sphinx extension: executes the stale chapters (:func:`dlnbook.runner.run_plans`; the plans
``dln-book build`` hands over in ``DLNBOOK_PLANS``, else planned and validated here), renders
each with the outputs of its run (:func:`dlnbook.pagerules.render_executed`), offers the
executed copy for download. Its settings (``dlnbook_*``) are listed in the README."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from sphinx.application import ENV_PICKLE_FILENAME, Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import ExtensionError
from sphinx.util import logging

from dlnbook.chapters import ChapterError, check_profile, discover_chapters, load_profile
from dlnbook.pagerules import caption_alt_texts, figure_problems, render_executed
from dlnbook.runner import (
    PLANS_ENV,
    ChapterFailure,
    Plan,
    PublishError,
    decode_plans,
    plan_runs,
    prune_cache,
    run_plans,
)

__all__ = ["RENDER_MARKER", "add_executed_download", "setup"]

logger = logging.getLogger(__name__)
#: Written in the doctrees folder when a build starts, removed when it finished without an
#: error: present at the start, it says that the last render was interrupted.
RENDER_MARKER = "dlnbook-render-incomplete"


def _cache_dir(app: Sphinx) -> Path:
    return Path(app.config.dlnbook_cache_dir or Path(app.outdir).parent / "executed")


def _keys(env: BuildEnvironment) -> dict[str, str]:
    """Docname -> key of the run its page shows (saved with the environment)."""
    return env.__dict__.setdefault("dlnbook_keys", {})


class _BookRunner:
    """The plans of one Sphinx build (docname -> plan); its methods are event handlers."""

    def __init__(self) -> None:
        self.plans: dict[str, Plan] = {}
        self.source: str | None = None  # the profile, as the parameters box names it

    def _plans(self, app: Sphinx) -> list[Plan]:
        """The plans ``dln-book build`` handed over, else the book planned here."""
        srcdir, path = Path(app.srcdir), None
        if os.environ.get("DLNBOOK_PARAMS_FILE"):
            path = Path(os.environ["DLNBOOK_PARAMS_FILE"]).resolve()
        elif app.config.dlnbook_params_file:
            path = (srcdir / app.config.dlnbook_params_file).resolve()
        if path is not None:
            self.source = (
                path.relative_to(srcdir).as_posix() if path.is_relative_to(srcdir) else str(path)
            )
        if os.environ.get(PLANS_ENV):
            return decode_plans(os.environ[PLANS_ENV])
        chapters = discover_chapters(srcdir / app.config.dlnbook_chapters_dir)
        profile = load_profile(path) if path else {}
        if path:
            check_profile(profile, (c.name for c in chapters), self.source)
        # the one validation of `dln-book run`, memory and time limits included unless waived
        allow_large = bool(os.environ.get("DLNBOOK_ALLOW_LARGE"))
        core = app.config.dlnbook_core_dir or None
        return plan_runs(chapters, profile, _cache_dir(app), core, allow_large)

    def builder_inited(self, app: Sphinx) -> None:
        """Plan, and execute only what is stale (nothing, after ``dln-book build``)."""
        try:
            plans = self._plans(app)
        except (ChapterError, RuntimeError) as exc:
            raise ExtensionError(f"dlnbook: {exc}") from None
        jobs, timeout = app.config.dlnbook_jobs or None, app.config.dlnbook_timeout or None
        try:
            run_plans(plans, jobs=jobs, timeout=timeout, log=lambda m: logger.info(f"dlnbook: {m}"))
        except (ChapterFailure, PublishError) as exc:
            raise ExtensionError(f"dlnbook: {exc}") from None
        prune_cache(plans)
        srcdir = Path(app.srcdir)
        for plan in plans:
            self.plans[plan.chapter.path.relative_to(srcdir).with_suffix("").as_posix()] = plan

    def env_get_outdated(self, app: Sphinx, env: BuildEnvironment, *changes: set[str]) -> list:
        """The chapters whose key changed since the last build, to be read again."""
        added, changed, _ = changes
        keys = _keys(env)
        return [
            docname
            for docname, plan in self.plans.items()
            if keys.get(docname) != plan.key and docname not in added | changed
        ]

    def source_read(self, app: Sphinx, docname: str, source: list[str]) -> None:
        """A chapter's source: its current text with the outputs of its run."""
        plan = self.plans.get(docname)
        if plan is None:
            return
        try:
            source[0] = render_executed(plan, self.source)
        except ValueError as exc:
            raise ExtensionError(f"dlnbook: {plan.chapter.name}: {exc}; build again") from None
        for problem in figure_problems(json.loads(source[0])):
            logger.warning(f"dlnbook: {plan.chapter.name}: {problem}", location=docname)
        _keys(app.env)[docname] = plan.key


def _purge_doc(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    _keys(env).pop(docname, None)


def _merge_info(app: Sphinx, env: BuildEnvironment, docnames: set, other: BuildEnvironment) -> None:
    _keys(env).update({doc: key for doc, key in _keys(other).items() if doc in docnames})


def add_executed_download(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """``html-page-context``: copy the executed notebook a chapter page shows (the cache's
    ``<chapter>-<key[:12]>/<chapter>.ipynb``) to ``executed/<pagename>.ipynb`` of the site
    and offer it first in the page's download menu."""
    key, name = _keys(app.env).get(pagename), Path(pagename).name
    source = key and _cache_dir(app) / f"{name}-{key[:12]}" / f"{name}.ipynb"
    menus = [b for b in context.get("header_buttons", []) if b.get("label") == "download-buttons"]
    if not (source and source.is_file() and menus):
        return
    target = Path(app.outdir) / "executed" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    for button in menus[0]["buttons"]:  # the source file (a chapter's is its notebook)
        if button.get("text") == ".ipynb":
            button["text"] = ".ipynb (as committed)"
    executed = {
        "type": "link",
        "url": context["pathto"](f"executed/{pagename}.ipynb", 1),
        "text": ".ipynb (executed)",
        "icon": "fas fa-code",
        "tooltip": "Download the executed notebook, with the outputs this page shows",
        "label": "download-executed-notebook-button",
    }
    menus[0]["buttons"].insert(0, executed)


def _start_render(app: Sphinx, config: Any) -> None:
    """``config-inited``, before Sphinx loads its saved environment: if the last build did
    not finish, delete that environment, the doctrees and the output, so that every page is
    read and written again (Sphinx would trust an environment saved before the pages were
    written and leave pages missing from the search index)."""
    doctrees, outdir = Path(app.doctreedir), Path(app.outdir)
    marker = doctrees / RENDER_MARKER
    if marker.is_file():
        logger.info("dlnbook: the last build did not finish; rendering every page afresh")
        shutil.rmtree(doctrees, ignore_errors=True)
        if outdir.is_dir() and outdir.resolve() != Path(app.srcdir).resolve():
            for path in outdir.iterdir():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    doctrees.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{os.getpid()}\n", encoding="utf-8")


def _finish_render(app: Sphinx, exception: Exception | None) -> None:
    """``build-finished``: the render is complete unless the build raised. A build failed by
    warnings (``-W --keep-going``) keeps Sphinx's saved environment, so that the next build
    would skip the faulty pages and pass: delete it, as Sphinx does after an error
    (``app._warncount``: Sphinx's count of the warnings not suppressed)."""
    if exception is None:
        (Path(app.doctreedir) / RENDER_MARKER).unlink(missing_ok=True)
        if (app.warningiserror or app.keep_going) and app._warncount:
            (Path(app.doctreedir) / ENV_PICKLE_FILENAME).unlink(missing_ok=True)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the configuration values and event handlers (Sphinx entry point)."""
    app.add_config_value("dlnbook_chapters_dir", "chapters", "env", [str])
    app.add_config_value("dlnbook_params_file", "", "", [str])
    app.add_config_value("dlnbook_cache_dir", "", "", [str])
    app.add_config_value("dlnbook_jobs", 0, "", [int])
    app.add_config_value("dlnbook_timeout", 0, "", [int, float])
    app.add_config_value("dlnbook_core_dir", "", "", [str])
    runner = _BookRunner()
    app.connect("builder-inited", runner.builder_inited)
    app.connect("env-get-outdated", runner.env_get_outdated)
    app.connect("source-read", runner.source_read)
    app.connect("env-purge-doc", _purge_doc)
    app.connect("env-merge-info", _merge_info)
    app.connect("config-inited", _start_render)
    app.connect("build-finished", _finish_render, priority=900)  # after every other handler
    app.connect("html-page-context", add_executed_download, priority=900)  # after the theme's
    app.connect("doctree-resolved", caption_alt_texts)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
