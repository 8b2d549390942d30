"""Sphinx extension: execute stale chapters with papermill, render them with their outputs.

Enable it in ``_config.yml`` (``sphinx.extra_extensions: [dlnbook.sphinx_ext]``) with
``execute.execute_notebooks: "off"``. Then ``jupyter-book build .``

1. at ``builder-inited``: takes the plans ``dln-book build`` hands over (environment
   variable ``DLNBOOK_PLANS``), or discovers the chapters, merges the parameter profile and
   validates it as ``dln-book run`` does; then runs, through the one driver
   (:func:`dlnbook.runner.run_plans`), every chapter whose key (code cells, kernel,
   effective parameters, ``dlncore`` code) has no intact cached run; any failing chapter
   aborts the build;
2. at ``env-get-outdated``: marks chapters whose key changed since the last build as
   outdated, so Sphinx re-reads them although their source file did not change;
3. at ``source-read``: replaces a chapter's source by the current notebook with the outputs
   of its executed copy (so prose edits need no rerun), hides the ``parameters`` cell and
   adds a box listing the parameters the chapter ran with (:mod:`dlnbook.pagerules`);
4. at ``html-page-context``: the page's download menu offers the executed copy it shows
   (copied to ``executed/<docname>.ipynb`` in the output, ``.ipynb (executed)``) beside the
   notebook as committed (``.ipynb (as committed)``).

A build either finishes the site or starts the render afresh: a marker written in the
doctrees folder at the start of every build and removed when it finished without error
makes the next build delete the saved environment, the doctrees and the HTML output when
the last one was interrupted (killed while writing pages) or failed.

Configuration values (``sphinx.config`` in ``_config.yml``):

``dlnbook_chapters_dir`` (``"chapters"``)
    Folder of the chapter notebooks, relative to the book root.
``dlnbook_params_file`` (``""``)
    Parameter profile (YAML) relative to the book root; the environment variable
    ``DLNBOOK_PARAMS_FILE`` (relative to the current directory) takes precedence.
``dlnbook_cache_dir`` (``""``)
    Cache of executed chapters; default ``executed/`` next to the HTML output folder
    (``_build/executed``).
``dlnbook_jobs`` (``0``)
    Chapters executed at once; 0 means one per available core.
``dlnbook_timeout`` (``0``)
    Per-cell timeout in seconds; 0 means none.
``dlnbook_core_dir`` (``""``)
    Library sources whose hash is part of every key; default: the installed ``dlncore``.
"""

from __future__ import annotations

import functools
import json
import logging as pylogging
import os
import shutil
from pathlib import Path
from typing import Any

from sphinx.application import ENV_PICKLE_FILENAME, Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import ExtensionError
from sphinx.util import logging
from sphinx.util.logging import NAMESPACE as SPHINX_LOGGER
from sphinx.util.logging import is_suppressed_warning

from dlnbook.chapters import (
    ChapterError,
    check_profile,
    discover_chapters,
    load_profile,
)
from dlnbook.pagerules import figure_problems, render_executed
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

__all__ = ["executed_copy", "setup"]

logger = logging.getLogger(__name__)


def _cache_dir(app: Sphinx) -> Path:
    return Path(app.config.dlnbook_cache_dir or Path(app.outdir).parent / "executed")


class _BookRunner:
    """Holds the plans of one Sphinx build; its methods are the event handlers."""

    def __init__(self) -> None:
        self.plans: dict[str, Plan] = {}
        self.source: str | None = None

    def _profile_path(self, app: Sphinx) -> Path | None:
        from_env = os.environ.get("DLNBOOK_PARAMS_FILE")
        if from_env:
            return Path(from_env).resolve()
        if app.config.dlnbook_params_file:
            return (Path(app.srcdir) / app.config.dlnbook_params_file).resolve()
        return None

    def _plans(self, app: Sphinx) -> list[Plan]:
        """The plans ``dln-book build`` handed over, else the book planned here."""
        if os.environ.get(PLANS_ENV):
            profile_path = self._profile_path(app)
            self.source = None if profile_path is None else self._relative(app, profile_path)
            return decode_plans(os.environ[PLANS_ENV])
        cfg = app.config
        srcdir = Path(app.srcdir)
        chapters = discover_chapters(srcdir / cfg.dlnbook_chapters_dir)
        profile_path = self._profile_path(app)
        profile = load_profile(profile_path) if profile_path else {}
        if profile_path:
            self.source = self._relative(app, profile_path)
            check_profile(profile, (c.name for c in chapters), self.source)
        # the one validation of `dln-book run`, memory and time limits included unless waived
        allow_large = bool(os.environ.get("DLNBOOK_ALLOW_LARGE"))
        core = cfg.dlnbook_core_dir or None
        return plan_runs(chapters, profile, _cache_dir(app), core, allow_large)

    @staticmethod
    def _relative(app: Sphinx, path: Path) -> str:
        try:
            return path.relative_to(Path(app.srcdir)).as_posix()
        except ValueError:
            return str(path)

    def builder_inited(self, app: Sphinx) -> None:
        cfg = app.config
        try:
            plans = self._plans(app)
        except (ChapterError, RuntimeError) as exc:
            raise ExtensionError(f"dlnbook: {exc}") from None
        try:  # executes only what is stale (nothing, after `dln-book build`)
            run_plans(
                plans,
                jobs=cfg.dlnbook_jobs or None,
                timeout=cfg.dlnbook_timeout or None,
                log=lambda msg: logger.info(f"dlnbook: {msg}"),
            )
        except (ChapterFailure, PublishError) as exc:
            raise ExtensionError(f"dlnbook: {exc}") from None
        prune_cache(plans)
        srcdir = Path(app.srcdir)
        self.plans = {
            plan.chapter.path.relative_to(srcdir).with_suffix("").as_posix(): plan for plan in plans
        }

    def env_get_outdated(
        self,
        app: Sphinx,
        env: BuildEnvironment,
        added: set[str],
        changed: set[str],
        removed: set[str],
    ) -> list[str]:
        keys = getattr(env, "dlnbook_keys", {})
        return [
            docname
            for docname, plan in self.plans.items()
            if keys.get(docname) != plan.key and docname not in added | changed
        ]

    def source_read(self, app: Sphinx, docname: str, source: list[str]) -> None:
        plan = self.plans.get(docname)
        if plan is None:
            return
        try:
            source[0] = render_executed(plan, self.source)
        except ValueError as exc:
            raise ExtensionError(f"dlnbook: {plan.chapter.name}: {exc}; build again") from None
        for problem in figure_problems(json.loads(source[0])):
            logger.warning(f"dlnbook: {plan.chapter.name}: {problem}", location=docname)
        if not hasattr(app.env, "dlnbook_keys"):
            app.env.dlnbook_keys = {}
        app.env.dlnbook_keys[docname] = plan.key

    @staticmethod
    def env_purge_doc(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
        getattr(env, "dlnbook_keys", {}).pop(docname, None)

    @staticmethod
    def env_merge_info(
        app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment
    ) -> None:
        if not hasattr(env, "dlnbook_keys"):
            env.dlnbook_keys = {}
        for docname, key in getattr(other, "dlnbook_keys", {}).items():
            if docname in docnames:
                env.dlnbook_keys[docname] = key


def executed_copy(app: Sphinx, docname: str) -> Path | None:
    """The executed copy rendered for ``docname`` (e.g. ``"chapters/01_setting"``), or None:
    ``<cache>/<chapter>-<key[:12]>/<chapter>.ipynb`` for the key recorded at ``source-read``
    (``app.env.dlnbook_keys``), when it exists."""
    key = getattr(app.env, "dlnbook_keys", {}).get(docname)
    if key is None:
        return None
    name = Path(docname).name
    path = _cache_dir(app) / f"{name}-{key[:12]}" / f"{name}.ipynb"
    return path if path.is_file() else None


def add_executed_download(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """``html-page-context``: copy the page's executed notebook and add it to the menu."""
    source = executed_copy(app, pagename)
    menus = [b for b in context.get("header_buttons", []) if b.get("label") == "download-buttons"]
    if source is None or not menus:
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


class _WarningCounter(pylogging.Handler):
    """Counts the warnings a Sphinx build reports (those not in ``suppress_warnings``).

    Attached to Sphinx's ``sphinx`` logger namespace with the standard :mod:`logging` API;
    warnings of parallel readers are re-emitted there by Sphinx and counted too.
    """

    def __init__(self, app: Sphinx) -> None:
        super().__init__(pylogging.WARNING)
        self.app = app
        self.count = 0

    def emit(self, record: pylogging.LogRecord) -> None:
        kind, subtype = getattr(record, "type", ""), getattr(record, "subtype", "")
        if not is_suppressed_warning(kind, subtype, self.app.config.suppress_warnings):
            self.count += 1


def _forget_env_after_failed_build(
    counter: _WarningCounter, app: Sphinx, exc: Exception | None
) -> None:
    """With ``-W --keep-going``, a build with warnings fails but Sphinx keeps its saved
    environment, so the next build would skip the faulty pages and pass. Delete it, as
    Sphinx itself does after an error, so that the next build reads every page again."""
    pylogging.getLogger(SPHINX_LOGGER).removeHandler(counter)
    fails_on_warnings = app.warningiserror or app.keep_going  # keep_going: only set with -W
    if exc is None and fails_on_warnings and counter.count:
        (Path(app.doctreedir) / ENV_PICKLE_FILENAME).unlink(missing_ok=True)


#: Written in the doctrees folder when a build starts, removed when it finished without an
#: error: present at the start, it says the last render was interrupted.
RENDER_MARKER = "dlnbook-render-incomplete"


def _start_render(app: Sphinx, config: Any) -> None:
    """``config-inited``, before Sphinx loads its saved environment: if the last build did
    not finish (killed while it wrote pages, or failed), delete the saved environment, the
    doctrees and the output folder, so that every page is read and written again. Sphinx
    would otherwise trust the environment saved before the pages were written, write only
    what changed since, and leave a site with pages missing from its search index."""
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
    """``build-finished``: the render is complete unless the build raised."""
    if exception is None:
        (Path(app.doctreedir) / RENDER_MARKER).unlink(missing_ok=True)


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
    app.connect("env-purge-doc", runner.env_purge_doc)
    app.connect("env-merge-info", runner.env_merge_info)
    app.connect("config-inited", _start_render)
    app.connect("build-finished", _finish_render, priority=900)  # after every other handler
    app.connect("html-page-context", add_executed_download, priority=900)  # after the theme's
    counter = _WarningCounter(app)
    pylogging.getLogger(SPHINX_LOGGER).addHandler(counter)
    app.connect("build-finished", functools.partial(_forget_env_after_failed_build, counter))
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
