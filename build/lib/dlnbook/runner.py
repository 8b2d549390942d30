"""The one driver: plan chapter runs, skip what is cached, execute the rest, publish each run.

``dln-book run``, ``dln-book sweep``, ``dln-book build`` and the Sphinx extension all go
through :func:`plan_runs` (validated parameters, keys, run folders) and :func:`run_plans`
(cache check, execution by :mod:`dlnbook.executor`, publishing, progress and Ctrl-C report).

Every run of a chapter is identified by a *key*: the SHA-256 of what changes its results, the
notebook's code cells and kernel, its effective parameters and the code of ``dlncore`` that it
runs (the core and the modules it imports, :mod:`dlnbook.cachekey`; syntax trees: comments and
docstrings do not count). The executed copy lives in
``<cache_dir>/<chapter>-<key[:12]>/``, which is also the working directory of the run, so the
chapter's raw results (``*.npz``) and figure files (``figures/``) land next to it, together
with ``run.json`` (what ran, with which parameters, how long it took, on which worker). The
chapter runs in a kernel driven by :mod:`dlnbook.executor` (a thread here, or a Dask worker),
which brings the files back; the client writes ``run.json``, adds the standalone page
(``finalize``) and publishes the folder in one atomic rename with its manifest written last
(:mod:`dlnbook.rundirs`). A folder is reused only if its manifest holds; a damaged one is set
aside and executed again; a killed run leaves no half-written folder.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import importlib.util
import json
import pickle
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dlnbook.cachekey import chapter_digest
from dlnbook.chapters import Chapter, load_chapter, validate
from dlnbook.executor import Task, TaskResult, available_cores, describe_error, open_executor
from dlnbook.rundirs import check_run, prune_stale, publish_failure, publish_run, set_aside

__all__ = [
    "PLANS_ENV",
    "RUN_RECORD",
    "ChapterFailure",
    "Outcome",
    "Plan",
    "PublishError",
    "available_cores",
    "code_digest",
    "decode_plans",
    "dry_run",
    "encode_plans",
    "expected_seconds",
    "find_core_dir",
    "longest_first",
    "notebook_digest",
    "plan_points",
    "plan_runs",
    "prune_cache",
    "run_plans",
]

#: Bump when the way chapters are executed changes, to invalidate every cached run.
CACHE_FORMAT = "dlnbook-run-2"
#: What ran, with which parameters, how long it took, where: written by the client.
RUN_RECORD = "run.json"
#: Seconds of a chapter at its default parameters that has never run here (the order of a
#: cold build), measured from a fresh clone (README): chapter 7 18 min 7 s, the appendix
#: 1 min 54 s (it reads its stored search; its ``# time:`` estimate is that of a new search).
#: Other chapters and parameters use the ``# time:`` estimates.
DEFAULT_SECONDS = {"07_experiments": 1087.0, "08_calibration": 114.0}


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


def code_digest(chapter: Chapter, core_dir: str | Path | None = None) -> str:
    """What a chapter's runs depend on besides their parameters: its code cells and kernel
    (:func:`notebook_digest`) and the ``dlncore`` code it runs: the core and the modules it
    imports, transitively (:func:`dlnbook.cachekey.chapter_digest`).
    """
    core = chapter_digest(chapter.path, core_dir if core_dir is not None else find_core_dir())
    return f"{notebook_digest(chapter.path)}:{core}"


def _run_key(code: str, parameters: Mapping[str, Any]) -> str:
    payload = {"format": CACHE_FORMAT, "code": code, "parameters": parameters}
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
        Validated effective parameters (defaults with overrides applied).
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
        """Whether a run with this key exists and its manifest holds."""
        return self.run_dir.is_dir() and check_run(self.run_dir) is None


def plan_points(
    chapter: Chapter,
    points: Iterable[Mapping[str, Any]],
    cache_dir: str | Path,
    core_dir: str | Path | None = None,
    allow_large: bool = True,
) -> list[Plan]:
    """Plans of one chapter for several sets of overrides (a sweep; a run is one point).

    Every set is validated (:func:`dlnbook.chapters.validate`) before anything is planned;
    the notebook and ``dlncore`` are hashed once.

    Parameters
    ----------
    chapter : Chapter
        The chapter.
    points : iterable of mapping
        Overrides of each point ({parameter: value}).
    cache_dir : str or Path
        Directory holding the run directories.
    core_dir : str or Path, optional
        Source directory of ``dlncore``; found automatically when omitted.
    allow_large : bool
        Skip the memory and time limits.

    Returns
    -------
    list of Plan
    """
    params = [validate(chapter, p, allow_large) for p in points]
    code = code_digest(chapter, core_dir)
    cache_dir = Path(cache_dir).resolve()
    plans = []
    for p in params:
        key = _run_key(code, p)
        plans.append(Plan(chapter, p, key, cache_dir / f"{chapter.name}-{key[:12]}"))
    return plans


def plan_runs(
    chapters: Iterable[Chapter],
    overrides: Mapping[str, Mapping[str, Any]] | None,
    cache_dir: str | Path,
    core_dir: str | Path | None = None,
    allow_large: bool = True,
) -> list[Plan]:
    """Validated parameters, keys and run directories of chapters (one point each).

    Parameters
    ----------
    chapters : iterable of Chapter
        Chapters to plan.
    overrides : mapping or None
        Chapter stem -> {parameter: value} (e.g. a loaded profile).
    cache_dir, core_dir, allow_large
        As for :func:`plan_points`.

    Returns
    -------
    list of Plan
        One plan per chapter, in the given order.
    """
    overrides = overrides or {}
    return [
        plan
        for chapter in chapters
        for plan in plan_points(
            chapter, [overrides.get(chapter.name) or {}], cache_dir, core_dir, allow_large
        )
    ]


#: Environment variable through which ``dln-book build`` hands its plans to the Sphinx
#: extension in ``jupyter-book build`` (so that the book is planned once).
PLANS_ENV = "DLNBOOK_PLANS"


def encode_plans(plans: Sequence[Plan]) -> str:
    """The plans as one environment variable's text (read by :func:`decode_plans`)."""
    rows = [(str(p.chapter.path), p.parameters, p.key, str(p.run_dir)) for p in plans]
    return base64.b64encode(pickle.dumps(rows)).decode()


def decode_plans(text: str) -> list[Plan]:
    """The plans :func:`encode_plans` wrote (chapters read again from their notebooks)."""
    rows = pickle.loads(base64.b64decode(text))  # noqa: S301 - written by our parent process
    return [Plan(load_chapter(path), params, key, Path(run)) for path, params, key, run in rows]


# --- how long a run takes --------------------------------------------------------------


def _last_record(plan: Plan) -> dict[str, Any] | None:
    """``run.json`` of the newest run of the chapter beside ``plan.run_dir``, if any."""
    records = []
    for path in plan.run_dir.parent.glob(f"{plan.chapter.name}-*/{RUN_RECORD}"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            records.append((str(record["finished"]), float(record["seconds"]), record))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return max(records, key=lambda r: r[0])[2] if records else None


def _time_estimate(chapter: Chapter, params: Mapping[str, Any]) -> float | None:
    total = [e.value(params) for e in chapter.estimates if e.kind == "time"]
    return sum(total) if total else None


def expected_seconds(plan: Plan) -> tuple[float | None, str]:
    """How long a run of ``plan`` should take, and where the figure comes from.

    Returns
    -------
    tuple of (float or None, str)
        ``(seconds, "recorded")`` from the newest earlier run of the chapter, scaled by
        the ratio of the chapter's ``# time:`` estimates at the two sets of parameters;
        ``(seconds, "guess")`` from :data:`DEFAULT_SECONDS` (default parameters) or the
        estimate alone when nothing is recorded; ``(None, "unknown")`` without either.
    """
    record = _last_record(plan)
    now = _time_estimate(plan.chapter, plan.parameters)
    if record is not None:
        seconds = float(record["seconds"])
        try:
            then = _time_estimate(plan.chapter, {**plan.parameters, **record["parameters"]})
        except Exception:  # noqa: BLE001 - parameters of an older notebook
            then = None
        if now and then:
            seconds *= now / then
        return seconds, "recorded"
    if plan.chapter.name in DEFAULT_SECONDS and plan.parameters == plan.chapter.defaults:
        return DEFAULT_SECONDS[plan.chapter.name], "guess"
    return (now, "guess") if now is not None else (None, "unknown")


def longest_first(plans: Iterable[Plan]) -> list[Plan]:
    """Plans ordered by :func:`expected_seconds`, longest first (unknown last, in order)."""
    plans = list(plans)
    seconds = [expected_seconds(p)[0] for p in plans]
    order = sorted(range(len(plans)), key=lambda i: (seconds[i] is None, -(seconds[i] or 0), i))
    return [plans[i] for i in order]


def _human_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _makespan(durations: list[float], workers: int) -> float:
    """Wall time of ``durations`` on ``workers`` slots, longest first (as scheduled)."""
    slots = [0.0] * max(1, workers)
    for seconds in sorted(durations, reverse=True):
        slots[slots.index(min(slots))] += seconds
    return max(slots)


def dry_run(
    plans: list[Plan],
    columns: Iterable[str] | None = None,
    scheduler: str | None = None,
    jobs: int | None = None,
    noun: str = "chapter",
    out: Callable[[str], None] = print,
) -> int:
    """Print what :func:`run_plans` would do, execute and write nothing; return 0.

    One row per plan: the parameters (``columns``, else those that differ from the
    defaults), ``cached`` or ``would execute`` (``damaged`` when its manifest fails), and the
    time :func:`expected_seconds` expects; then a line like "12 points: 4 cached, 8 to run,
    about 6 min on 2 workers".
    """
    columns = list(columns) if columns is not None else None
    rows, todo = [], []
    for plan in plans:
        shown = (
            columns
            if columns is not None
            else [k for k, v in plan.parameters.items() if v != plan.chapter.defaults.get(k)]
        )
        problem = check_run(plan.run_dir) if plan.run_dir.is_dir() else "absent"
        state = "cached" if problem is None else "would execute"
        seconds, source = expected_seconds(plan)
        if problem is None:
            cost = ""
        elif seconds is None:
            cost = "time unknown"
        else:
            todo.append(seconds)
            cost = f"about {_human_seconds(seconds)}" + (" (guess)" if source == "guess" else "")
        if problem not in (None, "absent"):
            state = f"damaged ({problem}): would execute"
        params = ", ".join(f"{k}={plan.parameters[k]!r}" for k in shown) or "defaults"
        rows.append((plan.chapter.name, params, state, cost))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        out("  ".join(c.ljust(w) for c, w in zip(row, [*widths, 0], strict=True)).rstrip())
    to_run = sum(r[2] != "cached" for r in rows)
    workers = jobs or available_cores()
    where = "on the cluster" if scheduler else f"on {workers} worker(s)"
    span = _makespan(todo, 1 if scheduler else workers)
    total = f", about {_human_seconds(span)} {where}" if todo else ""
    if scheduler and todo:
        total = f", about {_human_seconds(span)} of work {where}"
    unknown = to_run - len(todo)
    tail = f" ({unknown} without an estimate)" if unknown else ""
    out(f"{len(plans)} {noun}(s): {len(plans) - to_run} cached, {to_run} to run{total}{tail}")
    return 0


# --- outcomes --------------------------------------------------------------------------


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
        Where the chapter ran (``local`` or a Dask worker's address).
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


class PublishError(RuntimeError):
    """A finished run could not be written (full disk, the runs folder replaced): one line."""


def _fmt_seconds(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:04.1f}s" if minutes else f"{secs:.1f}s"


# --- publishing (on the client) --------------------------------------------------------


def _record(plan: Plan, result: TaskResult) -> bytes:
    record = {
        "chapter": plan.chapter.name,
        "notebook": str(plan.chapter.path),
        "key": plan.key,
        "parameters": plan.parameters,
        "seconds": round(result.seconds, 3),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "worker": result.worker,
    }
    return (json.dumps(record, indent=2, default=repr) + "\n").encode()


def _publish_error(plan: Plan, files: dict[str, bytes], exc: OSError) -> PublishError:
    """One line: which folder, why, and where the finished run's files were kept instead."""
    folder = plan.run_dir.parent
    try:
        kept = Path(tempfile.mkdtemp(prefix=f"dlnbook-kept-{plan.run_dir.name}-"))
        for rel, data in files.items():
            (kept / rel).parent.mkdir(parents=True, exist_ok=True)
            (kept / rel).write_bytes(data)
        where = f"its files are kept in {kept}"
    except OSError:
        where = "its files could not be kept anywhere"
    if exc.errno == errno.ENOSPC:
        need = sum(map(len, files.values())) / 1e6
        try:
            free = f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free"
        except OSError:
            free = "free space unknown"
        why = f"no space left in {folder}: {plan.run_dir.name} needs {need:.1f} MB ({free})"
    else:
        why = f"cannot write {plan.run_dir}: {exc.strerror or exc}"
    return PublishError(f"{why}; {where}; finished runs before it are kept")


_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _disk_error(exc: BaseException | None) -> OSError | None:
    """The full-disk (or read-only) error behind ``exc``, if any (e.g. inside the page's)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _publish(
    plan: Plan,
    result: TaskResult,
    finalize: Callable[[Path, Path], None] | None,
    replace: bool,
) -> Outcome:
    """Publish a worker's result here: the run folder (with ``run.json``, what ``finalize``
    adds and the manifest) on success, partial notebook and log on failure."""
    notebook = f"{plan.chapter.name}.ipynb"
    files = dict(result.files)
    error, full = result.error, result.traceback
    try:
        if error is None:
            files[RUN_RECORD] = _record(plan, result)
            try:
                add = None if finalize is None else (lambda d: finalize(d, d / notebook))
                if publish_run(plan.run_dir, files, replace=replace, finalize=add):
                    return Outcome(plan, result.seconds, None, result.worker)
                # the same run published by another process first: report the one on disk
                kept = json.loads((plan.run_dir / RUN_RECORD).read_text(encoding="utf-8"))
                return Outcome(plan, kept["seconds"], None, kept["worker"])
            except OSError:
                raise
            except Exception as exc:  # noqa: BLE001 - the page failed: the run fails
                disk = _disk_error(exc)
                if disk is not None:
                    raise disk from None
                error, full = describe_error(exc)
        partial, log = publish_failure(plan.run_dir, files.get(notebook), full or error)
    except OSError as exc:
        raise _publish_error(plan, files, exc) from None
    return Outcome(plan, result.seconds, error, result.worker, partial, log)


# --- the driver ------------------------------------------------------------------------


def _stale(
    plans: list[Plan], force: bool, log: Callable[[str], None], cached_lines: bool = True
) -> list[Plan]:
    """The plans to execute: not cached, damaged (set aside, one line each) or forced."""
    for folder in {p.run_dir.parent for p in plans}:
        prune_stale(folder)  # what a killed run left behind
    stale = []
    for plan in plans:
        problem = check_run(plan.run_dir) if plan.run_dir.is_dir() else "absent"
        if problem not in (None, "absent"):
            aside = set_aside(plan.run_dir)
            log(f"{plan.chapter.name}: run folder damaged ({problem}); set aside as {aside}")
        if force or problem is not None:
            stale.append(plan)
        elif cached_lines:
            log(f"{plan.chapter.name}: up to date ({plan.run_dir.name})")
    return stale


class _Lines:
    """The default progress report: a line per start and end, a heartbeat."""

    def __init__(self, stale: list[Plan], log: Callable[[str], None], heartbeat: float) -> None:
        self.stale, self.log, self.heartbeat = stale, log, heartbeat
        self.started = self.last = time.monotonic()
        self.announced: set[int] = set()
        self.finished = 0

    def announce(self, index: int) -> None:
        if index not in self.announced:
            self.announced.add(index)
            self.log(f"{self.stale[index].chapter.name}: started")

    def tick(self, running: list[int]) -> None:
        for index in running:
            self.announce(index)
        now = time.monotonic()
        if running and now - self.last >= self.heartbeat:
            self.last = now
            names = ", ".join(self.stale[i].chapter.name for i in running)
            self.log(f"still running ({_fmt_seconds(now - self.started)}): {names}")

    def outcome(self, index: int, outcome: Outcome) -> None:
        self.announce(index)
        self.finished += 1
        count = f"[{self.finished}/{len(self.stale)}]"
        took, name = _fmt_seconds(outcome.seconds), outcome.plan.chapter.name
        if outcome.error:
            self.log(f"{name}: FAILED after {took} {count}: {outcome.error}")
        else:
            self.log(f"{name}: done in {took} {count}")


def _interrupted(stale: list[Plan], outcomes: list[Outcome], noun: str) -> str:
    kept = sum(o.error is None for o in outcomes)
    return (
        f"interrupted: kept {kept} finished {noun}(s), stopped {len(stale) - len(outcomes)} "
        "unfinished (nothing of them written); the same command reuses what was kept in "
        f"{stale[0].run_dir.parent}"
    )


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
    progress: Any = None,
    wait_for_workers: bool = False,
    noun: str = "run",
) -> list[Outcome]:
    """Execute the plans whose run is not cached (longest first) and publish each run.

    Cached plans are skipped unless ``force`` (the previous folder is then replaced once the
    new run is complete); damaged ones are set aside. Chapters run on this machine (``jobs``
    at once, default the cores) or on the Dask cluster at ``scheduler`` (default
    ``$DLNBOOK_SCHEDULER``; ``wait_for_workers`` keeps waiting for its first worker).
    ``timeout`` is per cell. ``finalize(directory, executed_notebook)`` runs here and adds
    files (the standalone page) before a folder appears; if it raises, the run fails.
    ``stream_stderr`` copies the chapters' progress bars to the terminal. ``log`` receives
    a line per chapter (up to date, started, done or FAILED), "still running" every
    ``heartbeat`` seconds and, on Ctrl-C, what was kept (counting ``noun``);
    ``progress`` replaces the per-chapter lines: ``start(stale plans)``,
    ``tick(running indices)`` and ``outcome(index, outcome)``.

    Returns the outcomes of the executed chapters in completion order. Raises
    :class:`ChapterFailure` after all ran if any failed (successful runs stay cached),
    :class:`ExecutorError` for a bad, unreachable or empty cluster, :class:`PublishError` if a
    finished run cannot be written, ``KeyboardInterrupt`` on Ctrl-C (kernels stopped,
    finished runs kept).
    """
    stale = longest_first(_stale(list(plans), force, log, cached_lines=progress is None))
    if not stale:
        return []
    report = progress or _Lines(stale, log, heartbeat)
    tasks = [
        Task(
            p.chapter.name, p.chapter.path.read_bytes(), p.parameters, p.key, timeout, stream_stderr
        )
        for p in stale
    ]
    with open_executor(scheduler, jobs, wait_for_workers, log) as executor:
        log(f"executing {len(stale)} chapter run(s) with papermill {executor.where}")
        if progress is not None:
            progress.start(stale)
        outcomes = []
        try:
            for index, result in executor.run(tasks, on_tick=report.tick):
                outcomes.append(_publish(stale[index], result, finalize, force))
                report.outcome(index, outcomes[-1])
        except KeyboardInterrupt:
            log(_interrupted(stale, outcomes, noun))
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
