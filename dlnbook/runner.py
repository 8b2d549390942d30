"""Cached, parallel execution of chapters with papermill.

Every run of a chapter is identified by a *key*: the SHA-256 of what changes its results, the
notebook's code cells and kernel, its effective parameters and the code of ``dlncore`` (its
syntax trees: comments and docstrings do not count). The executed copy lives in
``<cache_dir>/<chapter>-<key[:12]>/``, which is also the working directory of the run, so the
chapter's raw results (``*.npz``) and figure files (``figures/``) land next to it, together
with ``run.json`` (what ran, with which parameters, how long it took). A run directory only
appears once the chapter finished without error, so its existence means "cached".
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import logging
import multiprocessing
import os
import re
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dlnbook.chapters import Chapter, effective_parameters

__all__ = [
    "ChapterFailure",
    "Outcome",
    "Plan",
    "available_cores",
    "find_core_dir",
    "hash_tree",
    "notebook_digest",
    "plan_runs",
    "prune_cache",
    "run_plans",
]

#: Bump when the way chapters are executed changes, to invalidate every cached run.
CACHE_FORMAT = "dlnbook-run-1"
RUN_RECORD = "run.json"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def available_cores() -> int:
    """Number of CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


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


def _code_fingerprint(source: bytes) -> str:
    """What a Python module computes: its syntax tree without docstrings.

    Comments, blank lines, formatting and docstrings (any statement that is only a string
    literal) do not appear in the result; everything else does. A file that does not parse
    is fingerprinted by its bytes, so that editing it still counts as a change.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return hashlib.sha256(source).hexdigest()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            node.body = [
                stmt
                for stmt in body
                if not (
                    isinstance(stmt, ast.Expr)
                    and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)
                )
            ]
    return ast.dump(tree)


def hash_tree(directory: str | Path) -> str:
    """SHA-256 of the Python code below a directory, insensitive to comments and docstrings.

    Every ``*.py`` file counts with its relative path and its syntax tree without docstrings
    (see :func:`_code_fingerprint`), so reformatting, comments, docstrings and blank lines
    change nothing, while any change to the code does. Other files (editor backups such as
    ``m.py~``, data, caches) and hidden files and folders are ignored.

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
        digest.update(_code_fingerprint(path.read_bytes()).encode() + b"\0")
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
        Hex SHA-256 of notebook, effective parameters and ``dlncore`` sources.
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
    core_digest = hash_tree(core_dir if core_dir is not None else find_core_dir())
    cache_dir = Path(cache_dir).resolve()
    plans = []
    for chapter in chapters:
        params = effective_parameters(chapter, overrides.get(chapter.name))
        key = _run_key(notebook_digest(chapter.path), params, core_digest)
        plans.append(Plan(chapter, params, key, cache_dir / f"{chapter.name}-{key[:12]}"))
    return plans


@dataclass
class Outcome:
    """Result of executing one chapter.

    Attributes
    ----------
    plan : Plan
        What was run.
    seconds : float
        Wall-clock duration.
    error : str or None
        Error message (with the cell's traceback) if the chapter raised, else None.
    """

    plan: Plan
    seconds: float
    error: str | None = None


class ChapterFailure(RuntimeError):
    """One or more chapters raised while executing.

    Attributes
    ----------
    failures : list of Outcome
        The failed runs, each with its error message.
    """

    def __init__(self, failures: Iterable[Outcome]) -> None:
        self.failures = list(failures)
        parts = [f"chapter {o.plan.chapter.name} failed:\n{o.error}" for o in self.failures]
        super().__init__("\n\n".join(parts))


def _describe_error(exc: BaseException) -> str:
    """Readable error text, with papermill's cell traceback when there is one."""
    ename = getattr(exc, "ename", None)
    if ename is not None:
        traceback = "\n".join(getattr(exc, "traceback", []) or [])
        text = f"{ename}: {getattr(exc, 'evalue', '')}\n{traceback}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return _ANSI.sub("", text).strip()


def _execute(
    notebook: str,
    name: str,
    run_dir: str,
    parameters: dict[str, Any],
    key: str,
    timeout: float | None,
    threads: int,
    finalize: Callable[[Path, Path], None] | None = None,
    stream_stderr: bool = False,
) -> tuple[float, str | None]:
    """Execute one chapter into ``run_dir`` (runs in a worker process).

    The notebook runs in a temporary sibling directory that is renamed to ``run_dir`` on
    success and deleted on failure (the failed notebook is kept in ``failed/`` for reading).
    ``finalize(directory, executed_notebook)`` runs in that directory before the rename; if
    it raises, the run fails. With ``stream_stderr`` the chapter's stderr (e.g. its tqdm
    progress bars) is copied to this process's stderr as it arrives.
    """
    import sys

    import papermill  # imported here: heavy, and only needed by workers

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    # papermill's own parameters-cell parser trips over comments that ours accepts, and
    # would warn about "unknown" parameters; the chapters were validated before.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    final = Path(run_dir)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    output = tmp / f"{name}.ipynb"
    start = time.monotonic()
    try:
        papermill.execute_notebook(
            notebook,
            str(output),
            parameters=parameters,
            cwd=str(tmp),
            progress_bar=False,
            log_output=False,
            execution_timeout=timeout,
            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no TCP-transport warning
            stderr_file=sys.stderr if stream_stderr else None,
        )
        record = {
            "chapter": name,
            "notebook": notebook,
            "key": key,
            "parameters": parameters,
            "seconds": round(time.monotonic() - start, 3),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (tmp / RUN_RECORD).write_text(json.dumps(record, indent=2, default=repr) + "\n")
        if finalize is not None:
            finalize(tmp, output)
    except BaseException as exc:  # noqa: BLE001 - any failure must be reported, not cached
        seconds = time.monotonic() - start
        if output.is_file():
            failed = final.parent / "failed"
            failed.mkdir(exist_ok=True)
            shutil.copyfile(output, failed / output.name)
        shutil.rmtree(tmp, ignore_errors=True)
        return seconds, _describe_error(exc)
    seconds = time.monotonic() - start
    if final.exists():  # a concurrent build produced the same run; keep that one
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(final)
    return seconds, None


def _fmt_seconds(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:04.1f}s" if minutes else f"{secs:.1f}s"


def run_plans(
    plans: Iterable[Plan],
    jobs: int | None = None,
    timeout: float | None = None,
    log: Callable[[str], None] = print,
    heartbeat: float = 60.0,
    finalize: Callable[[Path, Path], None] | None = None,
    stream_stderr: bool = False,
) -> list[Outcome]:
    """Execute the chapters whose run is not cached, in parallel.

    Parameters
    ----------
    plans : iterable of Plan
        Planned runs; cached ones are skipped.
    jobs : int, optional
        Number of chapters executed at once; defaults to the number of available cores.
    timeout : float, optional
        Per-cell timeout in seconds (none by default).
    log : callable
        Receives one progress line per chapter (name, status, elapsed time) and a
        "still running" line every ``heartbeat`` seconds.
    heartbeat : float
        Seconds between "still running" lines.
    finalize : callable, optional
        A module-level function ``finalize(directory, executed_notebook)`` (it is pickled by
        reference into the worker) that adds files to a successful run before its directory
        appears; if it raises, the run fails like a failing chapter.
    stream_stderr : bool
        Copy each chapter's stderr (its progress bars, warnings) to the terminal live.

    Returns
    -------
    list of Outcome
        The executed chapters, in completion order.

    Raises
    ------
    ChapterFailure
        After all stale chapters ran, if any of them raised; successful runs stay cached.
    """
    plans = list(plans)
    stale = [p for p in plans if not p.is_cached]
    for plan in plans:
        if plan.is_cached:
            log(f"{plan.chapter.name}: up to date ({plan.run_dir.name})")
    if not stale:
        return []
    cores = available_cores()
    jobs = max(1, min(jobs or cores, len(stale)))
    threads = max(1, cores // jobs)
    log(f"executing {len(stale)} chapter(s) with papermill, {jobs} at a time")
    outcomes: list[Outcome] = []
    pending = deque(stale)
    running: dict[Future, tuple[Plan, float]] = {}
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while pending or running:
            while pending and len(running) < jobs:
                plan = pending.popleft()
                plan.run_dir.parent.mkdir(parents=True, exist_ok=True)
                args = (
                    str(plan.chapter.path),
                    plan.chapter.name,
                    str(plan.run_dir),
                    plan.parameters,
                    plan.key,
                    timeout,
                    threads,
                    finalize,
                    stream_stderr,
                )
                running[pool.submit(_execute, *args)] = (plan, time.monotonic())
                log(f"{plan.chapter.name}: started")
            done, _ = wait(running, timeout=heartbeat, return_when=FIRST_COMPLETED)
            now = time.monotonic()
            if not done:
                still = ", ".join(
                    f"{p.chapter.name} ({_fmt_seconds(now - t)})" for p, t in running.values()
                )
                log(f"still running: {still}")
            for future in done:
                plan, started = running.pop(future)
                try:
                    seconds, error = future.result()
                except Exception as exc:  # worker crashed
                    seconds, error = now - started, _describe_error(exc)
                outcomes.append(Outcome(plan, seconds, error))
                status = "FAILED" if error else "done"
                count = f"[{len(outcomes)}/{len(stale)}]"
                log(f"{plan.chapter.name}: {status} in {_fmt_seconds(seconds)} {count}")
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
