"""The one driver of ``run``, ``sweep``, ``build`` and Sphinx: plan, skip what is cached,
execute the rest (:mod:`dlnbook.executor`), publish each run (:mod:`dlnbook.rundirs`).

A run's key is the SHA-256 of the notebook's code, its effective parameters and the
``dlncore`` code it runs (:mod:`dlnbook.cachekey`); its folder is
``<cache_dir>/<chapter>-<key[:12]>/``.
"""

from __future__ import annotations

import base64
import dataclasses
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
from dlnbook.checks import human
from dlnbook.executor import Outcome, available_cores, describe_error, open_executor
from dlnbook.rundirs import check_run, prune_stale, publish_failure, publish_run, set_aside

__all__ = ["PLANS_ENV", "RUN_RECORD", "ChapterFailure", "Outcome", "Plan", "PublishError"]
__all__ += ["decode_plans", "dry_run", "encode_plans", "expected_seconds", "longest_first"]
__all__ += ["notebook_digest", "plan_points", "plan_runs", "prune_cache", "run_plans"]

#: Bump when the way chapters are executed changes, to invalidate every cached run.
CACHE_FORMAT = "dlnbook-run-2"
#: What ran, with which parameters, how long it took, where: written by the client.
RUN_RECORD = "run.json"
#: Through it ``dln-book build`` hands its plans to the Sphinx extension (planned once).
PLANS_ENV = "DLNBOOK_PLANS"
#: Seconds of a chapter at its defaults that never ran here (README "Build time").
DEFAULT_SECONDS = {"07_experiments": 566.0, "08_calibration": 88.0}
#: Cell tags that change how a notebook executes; other tags only change the page.
EXECUTION_TAGS = frozenset({"parameters", "raises-exception", "skip-execution"})


def notebook_digest(path: str | Path) -> str:
    """SHA-256 of a notebook's code cells (source and :data:`EXECUTION_TAGS`) and kernel."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    cells = [
        [
            "".join(c.get("source", "")),
            sorted(EXECUTION_TAGS.intersection(c.get("metadata", {}).get("tags", []))),
        ]
        for c in nb.get("cells", [])
        if c.get("cell_type") == "code"
    ]
    kernel = (nb.get("metadata", {}).get("kernelspec") or {}).get("name")
    payload = json.dumps({"code_cells": cells, "kernel": kernel}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Plan:
    """One run of a chapter: validated effective ``parameters``, ``key`` and ``run_dir``."""

    chapter: Chapter
    parameters: dict[str, Any]
    key: str
    run_dir: Path

    @property
    def executed_notebook(self) -> Path:
        return self.run_dir / f"{self.chapter.name}.ipynb"

    @property
    def problem(self) -> str | None:
        """None when cached (the manifest holds), ``"absent"``, or what is wrong."""
        return check_run(self.run_dir) if self.run_dir.is_dir() else "absent"

    @property
    def is_cached(self) -> bool:
        return self.problem is None


def plan_points(
    chapter: Chapter,
    points: Iterable[Mapping[str, Any]],
    cache_dir: str | Path,
    core_dir: str | Path | None = None,
    allow_large: bool = True,
) -> list[Plan]:
    """The plans of ``chapter`` for each set of overrides in ``points``, all validated first;
    ``core_dir``: sources of ``dlncore`` (default: the installed package)."""
    params = [validate(chapter, p, allow_large) for p in points]
    core = core_dir or Path(importlib.util.find_spec("dlncore").origin).parent
    code = f"{notebook_digest(chapter.path)}:{chapter_digest(chapter.path, core)}"
    plans = []
    for p in params:
        payload = {"format": CACHE_FORMAT, "code": code, "parameters": p}
        key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=repr).encode()).hexdigest()
        plans.append(
            Plan(chapter, p, key, Path(cache_dir).resolve() / f"{chapter.name}-{key[:12]}")
        )
    return plans


def plan_runs(
    chapters: Iterable[Chapter],
    overrides: Mapping[str, Mapping[str, Any]] | None,
    cache_dir: str | Path,
    core_dir: str | Path | None = None,
    allow_large: bool = True,
) -> list[Plan]:
    """One plan per chapter; ``overrides``: a profile, chapter stem -> {parameter: value}."""
    overrides = overrides or {}
    return [
        plan_points(c, [overrides.get(c.name) or {}], cache_dir, core_dir, allow_large)[0]
        for c in chapters
    ]


def encode_plans(plans: Sequence[Plan]) -> str:
    """The plans as the text of one environment variable (read by :func:`decode_plans`)."""
    rows = [(str(p.chapter.path), p.parameters, p.key, str(p.run_dir)) for p in plans]
    return base64.b64encode(pickle.dumps(rows)).decode()


def decode_plans(text: str) -> list[Plan]:
    rows = pickle.loads(base64.b64decode(text))  # noqa: S301 - written by our parent process
    return [Plan(load_chapter(path), params, key, Path(run)) for path, params, key, run in rows]


def _time_estimate(chapter: Chapter, params: Mapping[str, Any]) -> float | None:
    total = [e.value(params) for e in chapter.estimates if e.kind == "time"]
    return sum(total) if total else None


def expected_seconds(plan: Plan) -> tuple[float | None, str]:
    """``(seconds, "recorded")``: the newest earlier run of the chapter, scaled by its
    ``# time:`` estimates; else ``(seconds, "guess")`` from :data:`DEFAULT_SECONDS` or the
    estimate; else ``(None, "unknown")``."""
    records = []
    for path in plan.run_dir.parent.glob(f"{plan.chapter.name}-*/{RUN_RECORD}"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            records.append((str(record["finished"]), float(record["seconds"]), record))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    now = _time_estimate(plan.chapter, plan.parameters)
    if records:
        _, seconds, record = max(records, key=lambda r: r[0])
        try:
            then = _time_estimate(plan.chapter, {**plan.parameters, **record["parameters"]})
        except Exception:  # noqa: BLE001 - parameters of an older notebook
            then = None
        return (seconds * now / then if now and then else seconds), "recorded"
    if plan.chapter.name in DEFAULT_SECONDS and plan.parameters == plan.chapter.defaults:
        return DEFAULT_SECONDS[plan.chapter.name], "guess"
    return now, "guess" if now is not None else "unknown"


def longest_first(plans: Iterable[Plan]) -> list[Plan]:
    """Plans by :func:`expected_seconds`, longest first (unknown last, in order)."""
    keyed = [(expected_seconds(p)[0], i, p) for i, p in enumerate(plans)]
    return [p for s, i, p in sorted(keyed, key=lambda k: (k[0] is None, -(k[0] or 0), k[1]))]


def dry_run(
    plans: list[Plan],
    columns: Iterable[str] | None = None,
    scheduler: str | None = None,
    jobs: int | None = None,
    noun: str = "chapter",
) -> int:
    """Print, per plan, its parameters (``columns``, else those not at their defaults), its
    state and expected time, then a total on the workers; execute nothing; return 0."""
    rows, todo, workers = [], [], 1 if scheduler else jobs or available_cores()
    for plan in plans:
        defaults, problem = plan.chapter.defaults, plan.problem
        shown = [k for k in defaults if plan.parameters[k] != defaults[k]]
        params = ", ".join(
            f"{k}={plan.parameters[k]!r}" for k in (shown if columns is None else columns)
        )
        state = {None: "cached", "absent": "would execute"}.get(problem)
        seconds, source = expected_seconds(plan)
        cost = "" if problem is None else "time unknown"
        if problem is not None and seconds is not None:
            todo.append(seconds)
            cost = f"about {human('time', seconds)}" + " (guess)" * (source == "guess")
        state = state or f"damaged ({problem}): would execute"
        rows.append((plan.chapter.name, params or "defaults", state, cost))
    widths = [max(len(r[i]) for r in rows) for i in range(3)] + [0]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    slots = [0.0] * workers
    for seconds in sorted(todo, reverse=True):
        slots[slots.index(min(slots))] += seconds
    where = "of work on the cluster" if scheduler else f"on {workers} worker(s)"
    to_run = sum(r[2] != "cached" for r in rows)
    total = f", about {human('time', max(slots))} {where}" * bool(todo)
    unknown = f" ({to_run - len(todo)} without an estimate)" * (to_run > len(todo))
    print(f"{len(plans)} {noun}(s): {len(plans) - to_run} cached, {to_run} to run{total}{unknown}")
    return 0


class ChapterFailure(RuntimeError):
    """One or more chapters raised while executing; ``failures``: their outcomes."""

    def __init__(self, failures: Iterable[Outcome]) -> None:
        self.failures = list(failures)
        super().__init__("; ".join(o.summary() for o in self.failures))


class PublishError(RuntimeError):
    """A finished run could not be written (full disk, the runs folder replaced): one line."""


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
    why = f"cannot write {plan.run_dir}: {exc.strerror or exc}"
    if exc.errno == errno.ENOSPC:
        try:
            free = f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free"
        except OSError:
            free = "free space unknown"
        need = sum(map(len, files.values())) / 1e6
        why = f"no space left in {folder}: {plan.run_dir.name} needs {need:.1f} MB ({free})"
    return PublishError(f"{why}; {where}; finished runs before it are kept")


def _disk_error(exc: BaseException | None) -> OSError | None:
    """The full-disk (or read-only) error behind ``exc``, if any (e.g. inside the page's)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in {errno.ENOSPC, errno.EDQUOT, errno.EROFS}:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _publish(
    plan: Plan, result: Outcome, finalize: Callable[[Path, Path], None] | None, replace: bool
) -> Outcome:
    """Write a worker's result: the run folder (``run.json``, what ``finalize`` adds, the
    manifest), or the partial notebook and log; a run published first by another process
    is reported as the one on disk."""
    notebook, files = f"{plan.chapter.name}.ipynb", dict(result.files)
    error, full = result.error, result.traceback
    outcome = dataclasses.replace(result, files={}, plan=plan)
    try:
        if error is None:
            record = {"chapter": plan.chapter.name, "notebook": str(plan.chapter.path)}
            record |= {"key": plan.key, "parameters": plan.parameters}
            record |= {"seconds": round(result.seconds, 3), "worker": result.worker}
            record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
            files[RUN_RECORD] = (json.dumps(record, indent=2, default=repr) + "\n").encode()
            try:
                add = None if finalize is None else (lambda d: finalize(d, d / notebook))
                if publish_run(plan.run_dir, files, replace=replace, finalize=add):
                    return outcome
                kept = json.loads((plan.run_dir / RUN_RECORD).read_text(encoding="utf-8"))
                return dataclasses.replace(outcome, seconds=kept["seconds"], worker=kept["worker"])
            except OSError:
                raise
            except Exception as exc:  # noqa: BLE001 - the page failed: the run fails
                if (disk := _disk_error(exc)) is not None:
                    raise disk from None
                error, full = describe_error(exc)
        partial, log = publish_failure(plan.run_dir, files.get(notebook), full or error)
    except OSError as exc:
        raise _publish_error(plan, files, exc) from None
    return dataclasses.replace(outcome, error=error, traceback=full, partial=partial, log=log)


def _stale(plans: list[Plan], force: bool, log: Callable[[str], None], quiet: bool) -> list[Plan]:
    """The plans to execute: not cached, damaged (set aside, one line each) or forced."""
    for folder in {p.run_dir.parent for p in plans}:
        prune_stale(folder)  # what a killed run left behind
    stale = []
    for plan in plans:
        problem = plan.problem
        if problem not in (None, "absent"):
            aside = set_aside(plan.run_dir)
            log(f"{plan.chapter.name}: run folder damaged ({problem}); set aside as {aside}")
        if force or problem is not None:
            stale.append(plan)
        elif not quiet:
            log(f"{plan.chapter.name}: up to date ({plan.run_dir.name})")
    return stale


class _Lines:
    """The default progress report: a line per start and end, and every ``heartbeat``
    seconds the chapters still running."""

    def __init__(self, log: Callable[[str], None], heartbeat: float) -> None:
        self.log, self.heartbeat, self.finished = log, heartbeat, 0
        self.started = self.last = time.monotonic()
        self.announced: set[int] = set()

    def start(self, stale: Sequence[Plan]) -> None:
        self.names = [p.chapter.name for p in stale]

    def tick(self, running: list[int], beat: bool = True) -> None:
        for index in sorted(set(running) - self.announced):
            self.announced.add(index)
            self.log(f"{self.names[index]}: started")
        if beat and running and time.monotonic() - self.last >= self.heartbeat:
            self.last = time.monotonic()
            names = ", ".join(self.names[i] for i in running)
            self.log(f"still running ({human('time', self.last - self.started)}): {names}")

    def outcome(self, index: int, outcome: Outcome) -> None:
        self.tick([index], beat=False)
        self.finished += 1
        took, count = human("time", outcome.seconds), f"[{self.finished}/{len(self.names)}]"
        if outcome.error:
            self.log(f"{self.names[index]}: FAILED after {took} {count}: {outcome.error}")
        else:
            self.log(f"{self.names[index]}: done in {took} {count}")


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
    """Execute the plans not cached (all if ``force``), longest first, publish each run and
    return the outcomes. ``finalize(folder, notebook)`` adds the page before a folder appears;
    ``progress`` (``start``, ``tick``, ``outcome``) replaces the lines in ``log``. Raises
    :class:`ChapterFailure` once all ran if any failed; on Ctrl-C says what was kept."""
    stale = longest_first(_stale(list(plans), force, log, quiet=progress is not None))
    if not stale:
        return []
    report = progress or _Lines(log, heartbeat)
    tasks = [(p.chapter.name, p.chapter.path.read_bytes(), p.parameters) for p in stale]
    outcomes: list[Outcome] = []
    with open_executor(scheduler, jobs, wait_for_workers, log) as executor:
        log(f"executing {len(stale)} chapter run(s) with papermill {executor.where}")
        report.start(stale)
        try:
            for index, result in executor.run(
                [(*t, timeout, stream_stderr) for t in tasks], on_tick=report.tick
            ):
                outcomes.append(_publish(stale[index], result, finalize, force))
                report.outcome(index, outcomes[-1])
        except KeyboardInterrupt:
            kept = sum(o.error is None for o in outcomes)
            log(
                f"interrupted: kept {kept} finished {noun}(s), stopped "
                f"{len(stale) - len(outcomes)} unfinished (nothing of them written); the same "
                f"command reuses what was kept in {stale[0].run_dir.parent}"
            )
            raise
    if failures := [o for o in outcomes if o.error]:
        raise ChapterFailure(failures)
    return outcomes


def prune_cache(plans: Iterable[Plan], keep: int = 3) -> list[Path]:
    """Delete all but the newest ``keep`` run folders of each plan's chapter (never the plan's
    own); return them."""
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
