"""Cached execution of chapters with papermill, through the one executor (Dask).

Every run of a chapter is identified by a *key*: the SHA-256 of what changes its results, the
notebook's code cells and kernel, its effective parameters and the code of ``dlncore`` that it
runs (the core and the modules it imports, :mod:`dlnbook.cachekey`; syntax trees: comments and
docstrings do not count). The executed copy lives in
``<cache_dir>/<chapter>-<key[:12]>/``, which is also the working directory of the run, so the
chapter's raw results (``*.npz``) and figure files (``figures/``) land next to it, together
with ``run.json`` (what ran, with which parameters, how long it took, on which worker). The
chapter runs on a worker of :class:`dlnbook.executor.Executor`, which brings the files back;
the run directory is then published in one atomic rename (:mod:`dlnbook.rundirs`), so its
existence means "cached" and a killed run leaves no half-written folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlnbook.cachekey import chapter_digest, code_fingerprint
from dlnbook.chapters import Chapter, effective_parameters
from dlnbook.executor import RUN_RECORD, Executor, Task, TaskResult, available_cores
from dlnbook.rundirs import prune_stale, publish_failure, publish_run

__all__ = [
    "ChapterFailure",
    "Outcome",
    "Plan",
    "available_cores",
    "find_core_dir",
    "hash_tree",
    "make_task",
    "notebook_digest",
    "plan_points",
    "plan_runs",
    "prune_cache",
    "record_result",
    "run_plans",
]

#: Bump when the way chapters are executed changes, to invalidate every cached run.
CACHE_FORMAT = "dlnbook-run-1"


def find_core_dir() -> Path:
    """Locate the source directory of the installed ``dlncore`` package (without importing it).

    Raises
    ------
    RuntimeError
        If ``dlncore`` is not installed.
    """
    spec = importlib.util.find_spec("dlncore")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package 'dlncore' is not importable; run `pip install -e .`")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def hash_tree(directory: str | Path) -> str:
    """SHA-256 of the Python code below a directory, insensitive to comments and docstrings.

    Every ``*.py`` file counts with its relative path and its syntax tree without docstrings
    (see :func:`dlnbook.cachekey.code_fingerprint`), so reformatting, comments, docstrings and
    blank lines change nothing, while any change to the code does. Other files (editor backups
    such as ``m.py~``, data, caches) and hidden files and folders are ignored.

    Parameters
    ----------
    directory : str or Path
        Root of the tree (e.g. the ``dlncore`` package).

    Returns
    -------
    str
        Hex digest.
    """
    root = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if not path.is_file() or any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
            continue
        digest.update(rel.as_posix().encode() + b"\0")
        digest.update(code_fingerprint(path.read_bytes()).encode() + b"\0")
    return digest.hexdigest()


#: Cell tags that change how a notebook executes (papermill's injection point, cells allowed
#: to raise or skipped); other tags only change how the page shows the cell.
EXECUTION_TAGS = frozenset({"parameters", "raises-exception", "skip-execution"})


def notebook_digest(path: str | Path) -> str:
    """SHA-256 of what a notebook computes: its code cells and its kernel.

    Only the source of each code cell (in order), its execution-relevant tags
    (:data:`EXECUTION_TAGS`) and the kernel's name count. Markdown cells, figure captions and
    other cell metadata, outputs and execution counts are ignored: the page takes its text
    from the current notebook (see :func:`dlnbook.sphinx_ext.render_executed`), so editing
    prose or saving a notebook with outputs does not invalidate its cached run.
    """
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    cells = [
        [
            "".join(cell.get("source", "")),
            sorted(EXECUTION_TAGS.intersection(cell.get("metadata", {}).get("tags", []))),
        ]
        for cell in nb.get("cells", [])
        if cell.get("cell_type") == "code"
    ]
    kernel = (nb.get("metadata", {}).get("kernelspec") or {}).get("name")
    payload = {"code_cells": cells, "kernel": kernel}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _run_key(nb_digest: str, parameters: Mapping[str, Any], core_digest: str) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "notebook": nb_digest,
        "parameters": parameters,
        "dlncore": core_digest,
    }
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Plan:
    """What to run for one chapter and where its executed copy is (or will be) cached.

    Attributes
    ----------
    chapter : Chapter
        The chapter.
    parameters : dict
        Effective parameters (defaults with overrides applied).
    key : str
        Hex SHA-256 of notebook, effective parameters and the ``dlncore`` code the chapter
        runs (:func:`dlnbook.cachekey.chapter_digest`).
    run_dir : Path
        ``<cache_dir>/<chapter>-<key[:12]>``: working directory and cache entry of the run.
    """

    chapter: Chapter
    parameters: dict[str, Any]
    key: str
    run_dir: Path

    @property
    def executed_notebook(self) -> Path:
        """Path of the executed copy inside :attr:`run_dir`."""
        return self.run_dir / f"{self.chapter.name}.ipynb"

    @property
    def is_cached(self) -> bool:
        """Whether a successful run with this key exists."""
        return (self.run_dir / RUN_RECORD).is_file() and self.executed_notebook.is_file()


def plan_runs(
    chapters: Iterable[Chapter],
    overrides: Mapping[str, Mapping[str, Any]] | None,
    cache_dir: str | Path,
    core_dir: str | Path | None = None,
) -> list[Plan]:
    """Compute effective parameters, keys and run directories of chapters.

    Parameters
    ----------
    chapters : iterable of Chapter
        Chapters to plan.
    overrides : mapping or None
        Chapter stem -> {parameter: value} (e.g. a loaded profile).
    cache_dir : str or Path
        Directory holding the run directories.
    core_dir : str or Path, optional
        Source directory of ``dlncore`` to hash; found automatically when omitted.

    Returns
    -------
    list of Plan
        One plan per chapter, in the given order.
    """
    overrides = overrides or {}
    core = core_dir if core_dir is not None else find_core_dir()
    cache_dir = Path(cache_dir).resolve()
    plans = []
    for chapter in chapters:
        params = effective_parameters(chapter, overrides.get(chapter.name))
        key = _run_key(notebook_digest(chapter.path), params, chapter_digest(chapter.path, core))
        plans.append(Plan(chapter, params, key, cache_dir / f"{chapter.name}-{key[:12]}"))
    return plans


def plan_points(
    chapter: Chapter,
    points: Iterable[Mapping[str, Any]],
    cache_dir: str | Path,
    core_dir: str | Path | None = None,
) -> list[Plan]:
    """Plans of one chapter with several sets of effective parameters (a sweep).

    The same keys and run directories as :func:`plan_runs` gives for each set; the
    notebook and ``dlncore`` are hashed once.

    Parameters
    ----------
    chapter : Chapter
        The chapter.
    points : iterable of mapping
        Effective (validated) parameters of each point.
    cache_dir : str or Path
        Directory holding the run directories.
    core_dir : str or Path, optional
        Source directory of ``dlncore``; found automatically when omitted.

    Returns
    -------
    list of Plan
    """
    core_digest = chapter_digest(chapter.path, core_dir or find_core_dir())
    nb_digest = notebook_digest(chapter.path)
    cache_dir = Path(cache_dir).resolve()
    plans = []
    for params in points:
        key = _run_key(nb_digest, dict(params), core_digest)
        plans.append(Plan(chapter, dict(params), key, cache_dir / f"{chapter.name}-{key[:12]}"))
    return plans


@dataclass
class Outcome:
    """Result of executing one chapter.

    Attributes
    ----------
    plan : Plan
        What was run.
    seconds : float
        Wall-clock duration on the worker.
    error : str or None
        One-line summary of the failure (cell and exception), None on success.
    worker : str
        Address of the worker that executed the chapter.
    partial : Path or None
        The partially executed notebook of this failure, if the kernel got that far.
    log : Path or None
        File holding the full traceback of this failure.
    """

    plan: Plan
    seconds: float
    error: str | None = None
    worker: str = ""
    partial: Path | None = None
    log: Path | None = None

    def summary(self) -> str:
        """One line: chapter, cell, exception, and where the partial notebook and log are."""
        where = [f"partial notebook {self.partial}"] if self.partial else []
        if self.log:
            where.append(f"traceback in {self.log}")
        tail = f" ({'; '.join(where)})" if where else ""
        return f"chapter {self.plan.chapter.name} failed {self.error}{tail}"


class ChapterFailure(RuntimeError):
    """One or more chapters raised while executing.

    Attributes
    ----------
    failures : list of Outcome
        The failed runs, each with its error message.
    """

    def __init__(self, failures: Iterable[Outcome]) -> None:
        self.failures = list(failures)
        super().__init__("; ".join(o.summary() for o in self.failures))


def _fmt_seconds(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:04.1f}s" if minutes else f"{secs:.1f}s"


def make_task(
    plan: Plan,
    timeout: float | None = None,
    finalize: Callable[[Path, Path], None] | None = None,
    stream_stderr: bool = False,
) -> Task:
    """The executor task of a planned run (the notebook travels as bytes)."""
    return Task(
        name=plan.chapter.name,
        source=str(plan.chapter.path),
        notebook=plan.chapter.path.read_bytes(),
        parameters=plan.parameters,
        key=plan.key,
        timeout=timeout,
        finalize=finalize,
        stream_stderr=stream_stderr,
    )


def record_result(plan: Plan, result: TaskResult, replace: bool = False) -> Outcome:
    """Publish a worker's result: the run folder on success, partial notebook and log on
    failure (see :mod:`dlnbook.rundirs`)."""
    if result.error is None:
        publish_run(plan.run_dir, result.files, replace=replace)
        return Outcome(plan, result.seconds, None, result.worker)
    notebook = result.files.get(f"{plan.chapter.name}.ipynb")
    partial, log = publish_failure(plan.run_dir, notebook, result.traceback or result.error)
    return Outcome(plan, result.seconds, result.error, result.worker, partial, log)


def run_plans(
    plans: Iterable[Plan],
    jobs: int | None = None,
    timeout: float | None = None,
    log: Callable[[str], None] = print,
    heartbeat: float = 60.0,
    finalize: Callable[[Path, Path], None] | None = None,
    stream_stderr: bool = False,
    scheduler: str | None = None,
    force: bool = False,
) -> list[Outcome]:
    """Execute the chapters whose run is not cached, through the :class:`Executor`.

    Nothing is started when every run is cached. Locally, ``jobs`` single-threaded Dask
    workers execute the chapters; with ``scheduler`` (or ``$DLNBOOK_SCHEDULER``) an
    existing cluster does.

    Parameters
    ----------
    plans : iterable of Plan
        Planned runs; cached ones are skipped (unless ``force``).
    jobs : int, optional
        Number of chapters executed at once locally; defaults to the available cores.
    timeout : float, optional
        Per-cell timeout in seconds (none by default).
    log : callable
        Receives one progress line per chapter (name, status, elapsed time), a
        "still running" line every ``heartbeat`` seconds, and on an interruption one line
        saying what was kept.
    heartbeat : float
        Seconds between "still running" lines.
    finalize : callable, optional
        A module-level function ``finalize(directory, executed_notebook)`` (it is pickled by
        reference to the worker) that adds files to a successful run before its directory
        appears; if it raises, the run fails like a failing chapter.
    stream_stderr : bool
        Copy each chapter's stderr (its progress bars, warnings) to the terminal live
        (local workers write to this terminal).
    scheduler : str, optional
        Address of a Dask scheduler; default ``$DLNBOOK_SCHEDULER`` or a local cluster.
    force : bool
        Execute cached runs too; the previous run folder is replaced only once the new
        run is complete.

    Returns
    -------
    list of Outcome
        The executed chapters, in completion order.

    Raises
    ------
    ChapterFailure
        After all stale chapters ran, if any of them raised; successful runs stay cached.
    ExecutorError
        If the scheduler cannot be reached.
    KeyboardInterrupt
        On Ctrl-C (after stopping the workers; finished runs are kept).
    """
    plans = list(plans)
    for folder in {p.run_dir.parent for p in plans}:
        prune_stale(folder)  # what a killed run left behind
    stale = [p for p in plans if force or not p.is_cached]
    for plan in plans:
        if plan not in stale:
            log(f"{plan.chapter.name}: up to date ({plan.run_dir.name})")
    if not stale:
        return []
    outcomes: list[Outcome] = []
    with Executor(scheduler, jobs) as executor:
        executor.start(len(stale))
        tasks = [make_task(p, timeout, finalize, stream_stderr) for p in stale]
        where = "on this machine" if executor.is_local else f"on {executor.scheduler}"
        log(f"executing {len(stale)} chapter(s) with papermill {where}")
        started = time.monotonic()
        last_beat = started
        announced: set[str] = set()
        done: set[str] = set()

        def announce(key: str, worker: str = "") -> None:
            if key not in announced:
                announced.add(key)
                name = next(p.chapter.name for p in stale if p.key == key)
                remote = worker and not executor.is_local
                log(f"{name}: started" + (f" on {worker}" if remote else ""))

        def beat(running: dict[str, str]) -> None:
            nonlocal last_beat
            for key, worker in running.items():
                announce(key, worker)
            now = time.monotonic()
            if now - last_beat >= heartbeat:
                last_beat = now
                names = [p.chapter.name for p in stale if p.key in announced - done]
                log(f"still running ({_fmt_seconds(now - started)}): {', '.join(names)}")

        try:
            for index, result in executor.run(tasks, on_tick=beat):
                plan = stale[index]
                announce(plan.key, result.worker)
                done.add(plan.key)
                outcome = record_result(plan, result, replace=force)
                outcomes.append(outcome)
                count = f"[{len(outcomes)}/{len(stale)}]"
                took = _fmt_seconds(outcome.seconds)
                if outcome.error:
                    log(f"{plan.chapter.name}: FAILED after {took} {count}: {outcome.error}")
                else:
                    log(f"{plan.chapter.name}: done in {took} {count}")
        except KeyboardInterrupt:
            kept = sum(o.error is None for o in outcomes)
            log(
                f"interrupted: kept {kept} finished run(s), "
                f"stopped {len(stale) - len(outcomes)} unfinished (nothing of them written)"
            )
            raise
    failures = [o for o in outcomes if o.error]
    if failures:
        raise ChapterFailure(failures)
    return outcomes


def prune_cache(plans: Iterable[Plan], keep: int = 3) -> list[Path]:
    """Delete old run directories of the planned chapters, keeping the newest ``keep``.

    The run directory of each plan is never deleted.

    Parameters
    ----------
    plans : iterable of Plan
        Current plans; their cache directories are scanned for ``<chapter>-<hash>`` runs.
    keep : int
        Number of runs per chapter to keep (including the current one).

    Returns
    -------
    list of Path
        The deleted directories.
    """
    deleted = []
    for plan in plans:
        pattern = re.compile(re.escape(plan.chapter.name) + r"-[0-9a-f]{12}")
        runs = [
            d
            for d in plan.run_dir.parent.glob(f"{plan.chapter.name}-*")
            if d.is_dir() and pattern.fullmatch(d.name) and d != plan.run_dir
        ]
        runs.sort(key=lambda d: d.stat().st_mtime, reverse=True)
        for old in runs[max(0, keep - 1) :]:
            shutil.rmtree(old, ignore_errors=True)
            deleted.append(old)
    return deleted
