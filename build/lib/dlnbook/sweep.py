"""Sweeps: one chapter over a grid of parameters, each point exactly a ``dln-book run``.

Every point is planned like ``dln-book run`` (same key, same ``runs/<chapter>-<hash>/``
folder, so sweeps and runs reuse each other's results) and executed by the one
driver (:func:`dlnbook.runner.run_plans`). The sweep's own folder ``sweeps/<chapter>-<hash>/``
(the hash covers the set of points) holds

- ``points.csv``: one row per point: the swept parameters, status (``done``, ``reused``,
  ``failed``), seconds, worker, run folder, error, and every scalar the chapter glued;
- ``index.html``: a standalone offline page showing how the results depend on the swept
  parameters, with links to each point's own page.

Both are written by :func:`dlnbook.sweeppage.write_sweep` in one atomic step once every
point has finished or failed.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlnbook.chapters import Chapter, ChapterError, effective_parameters, load_yaml, parse_override
from dlnbook.glued import glued_values
from dlnbook.rundirs import prune_stale
from dlnbook.runner import RUN_RECORD, ChapterFailure, Outcome, Plan, run_plans
from dlnbook.sweeppage import write_sweep

__all__ = [
    "MAX_POINTS",
    "Point",
    "glued_values",
    "grid",
    "parse_axis",
    "run_sweep",
    "sweep_folder",
    "write_sweep",
]

#: Largest grid accepted without an explicit confirmation (``--yes``).
MAX_POINTS = 10_000
_RANGE = re.compile(r"\s*([^:\[\]'\"]+):([^:\[\]'\"]+):(\d+)(:log)?\s*")


# --- the grid --------------------------------------------------------------------------


def _as_int_if_integral(values: list[float], default: Any) -> list[Any]:
    """Grid values for an int parameter: integers when every value is (nearly) integral."""
    if not isinstance(default, int) or isinstance(default, bool):
        return values
    rounded = [round(v) for v in values]
    if all(abs(v - r) <= 1e-9 * max(1.0, abs(v)) for v, r in zip(values, rounded, strict=True)):
        return list(dict.fromkeys(rounded))
    return values


def parse_axis(text: str, default: Any) -> tuple[str, list[Any]]:
    """Read ``NAME=V1,V2,...``, ``NAME=A:B:STEPS`` or ``NAME=A:B:STEPS:log``.

    Values are Python literals as for ``dln-book run`` (``[3, 2, 3]`` is one value of a
    list parameter). ``A:B:STEPS`` is ``STEPS`` evenly spaced values from ``A`` to ``B``,
    ``:log`` makes them geometric; for an int parameter they must be integers.

    Parameters
    ----------
    text : str
        The ``-p`` argument.
    default : Any
        Default of the parameter (decides whether a range gives integers).

    Returns
    -------
    tuple of (str, list)
        Name and values (not yet validated).

    Raises
    ------
    ChapterError
        On a malformed argument or an empty list of values.
    """
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ChapterError(f"expected NAME=V1,V2,... or NAME=A:B:STEPS, got {text!r}")
    match = _RANGE.fullmatch(raw)
    if match:
        try:
            low, high = float(match[1]), float(match[2])
        except ValueError:
            raise ChapterError(f"cannot read the range {raw!r} of {name!r}") from None
        steps = int(match[3])
        if steps < 1:
            raise ChapterError(f"the range {raw!r} of {name!r} is empty (STEPS must be >= 1)")
        if match[4] and (low <= 0 or high <= 0):
            raise ChapterError(f"the log range {raw!r} of {name!r} needs positive ends")
        if steps == 1:
            values = [low]
        elif match[4]:
            ratio = math.log(high / low) / (steps - 1)
            values = [low * math.exp(ratio * i) for i in range(steps)]
            values[-1] = high
        else:
            values = [low + (high - low) * i / (steps - 1) for i in range(steps)]
        return name, _as_int_if_integral(values, default)
    try:
        tree = ast.parse(f"[{raw}]", mode="eval")
        items = [ast.get_source_segment(f"[{raw}]", elt) for elt in tree.body.elts]
    except SyntaxError:
        items = [part for part in raw.split(",")]
    values = [parse_override(f"{name}={item}")[1] for item in items if item.strip()]
    if not values:
        raise ChapterError(f"no values for {name!r} in {text!r}")
    return name, values


def grid(axes: Mapping[str, Sequence[Any]], points: Sequence[Mapping[str, Any]] = ()) -> list[dict]:
    """Every combination of the axes, for every explicit point (or once without points).

    Duplicate points are kept once, in first-seen order.
    """
    names = list(axes)
    bases = list(points) or [{}]
    seen: dict[str, dict[str, Any]] = {}
    for base in bases:
        for combo in itertools.product(*(axes[n] for n in names)):
            point = {**base, **dict(zip(names, combo, strict=True))}
            seen.setdefault(json.dumps(point, sort_keys=True, default=repr), point)
    return list(seen.values())


def load_points_file(path: Path) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
    """Axes and explicit points of a sweep file.

    The YAML file is either a mapping ``NAME: [V1, V2, ...]`` (a scalar is one value) or
    ``points: [{NAME: V, ...}, ...]`` listing the points themselves.

    Raises
    ------
    ChapterError
        If the file cannot be read or has another shape.
    """
    data = load_yaml(path, "sweep file")
    if isinstance(data, dict) and set(data) == {"points"}:
        points = data["points"]
        if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
            raise ChapterError(f"sweep file {path}: 'points' must be a list of mappings")
        if not points:
            raise ChapterError(f"sweep file {path}: the list of points is empty")
        return {}, [dict(p) for p in points]
    if not isinstance(data, dict) or not data:
        raise ChapterError(
            f"sweep file {path}: expected NAME: [values] entries or a 'points:' list"
        )
    axes = {}
    for name, values in data.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ChapterError(f"sweep file {path}: no values for {name!r}")
        axes[str(name)] = values
    return axes, []


def check_names(chapter: Chapter, names: Iterable[str]) -> None:
    """Raise the usual 'has no parameter' error for an unknown name."""
    for name in names:
        if name not in chapter.defaults:
            effective_parameters(chapter, {name: None})


# --- results of a point ----------------------------------------------------------------


@dataclass
class Point:
    """One point of a sweep and what became of it."""

    index: int
    overrides: dict[str, Any]
    plan: Plan
    status: str = "pending"
    seconds: float | None = None
    worker: str = ""
    error: str = ""
    partial: Path | None = None
    log: Path | None = None
    glued: dict[str, Any] = field(default_factory=dict)


def _from_outcome(point: Point, outcome: Outcome) -> None:
    point.seconds, point.worker = outcome.seconds, outcome.worker
    if outcome.error:
        point.status, point.error = "failed", outcome.error
        point.partial, point.log = outcome.partial, outcome.log
    else:
        point.status = "done"
        point.glued = glued_values(point.plan.executed_notebook)


def _from_cache(point: Point) -> None:
    record = json.loads((point.plan.run_dir / RUN_RECORD).read_text(encoding="utf-8"))
    point.status, point.seconds = "reused", record.get("seconds")
    point.worker = record.get("worker", "")
    point.glued = glued_values(point.plan.executed_notebook)


# --- the sweep folder ------------------------------------------------------------------


def sweep_folder(sweeps_dir: Path, chapter: Chapter, plans: Iterable[Plan]) -> Path:
    """``<sweeps_dir>/<chapter>-<hash>``: the hash covers the set of points."""
    digest = hashlib.sha256("\n".join(sorted(p.key for p in plans)).encode()).hexdigest()
    return sweeps_dir.resolve() / f"{chapter.name}-{digest[:12]}"


# --- running ---------------------------------------------------------------------------


def _fmt(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """One line: points done / running / failed and the estimated time left.

    On a terminal the line is rewritten in place; otherwise a line is printed whenever
    the counts change. It is the ``progress`` of :func:`dlnbook.runner.run_plans`.
    """

    def __init__(self, points: Sequence[Point], stream: Any = None) -> None:
        self.points = {p.plan.key: p for p in points}
        self.total, self.reused = len(points), len(points)
        self.done = self.failed = self.running = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start_time = time.monotonic()
        self.last = ""

    def start(self, stale: Sequence[Plan]) -> None:
        """The points to execute (the others are reused)."""
        self.reused = self.total - len(stale)
        self.start_time = time.monotonic()
        self.show()

    def tick(self, running: Sequence[int]) -> None:
        """Indices of the running points."""
        self.running = len(running)
        self.show()

    def outcome(self, index: int, outcome: Outcome) -> None:
        """A point finished (or failed)."""
        _from_outcome(self.points[outcome.plan.key], outcome)
        if outcome.error:
            self.failed += 1
        else:
            self.done += 1
        self.running = max(0, self.running - 1)
        self.show()

    def line(self) -> str:
        finished = self.done + self.failed
        left = self.total - self.reused - finished
        if finished and left:
            eta = _fmt((time.monotonic() - self.start_time) / finished * left)
        else:
            eta = "0m00s" if not left else "?"
        reused = f" ({self.reused} reused)" if self.reused else ""
        return (
            f"sweep: {self.done + self.reused}/{self.total} done{reused}, "
            f"{self.running} running, {self.failed} failed, ETA {eta}"
        )

    def show(self, final: bool = False) -> None:
        text = self.line()
        if self.tty:
            print(f"\r{text}\x1b[K", end="\n" if final else "", file=self.stream, flush=True)
        elif text.split(", ETA")[0] != self.last.split(", ETA")[0]:
            print(text, file=self.stream, flush=True)
        self.last = text


def run_sweep(
    chapter: Chapter,
    points: list[Point],
    swept: Sequence[str],
    folder: Path,
    log: Callable[[str], None] = print,
    **driver: Any,
) -> int:
    """Execute the points that are not cached through the one driver, then write the sweep
    folder.

    Parameters
    ----------
    chapter, points, swept, folder
        The sweep.
    log : callable
        Receives the lines of the sweep.
    **driver
        Passed to :func:`dlnbook.runner.run_plans` (``scheduler``, ``jobs``, ``force``,
        ``timeout``, ``finalize``, ``wait_for_workers``).

    Returns
    -------
    int
        0 when every point succeeded, 1 when any failed.

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C, after one line saying what was kept (finished points stay in ``runs/``;
        the sweep folder is not written).
    """
    progress = Progress(points)
    prune_stale(folder.parent)  # what a killed sweep left behind
    try:
        run_plans([p.plan for p in points], log=log, progress=progress, noun="point", **driver)
    except ChapterFailure:
        pass  # recorded in the points
    except KeyboardInterrupt:
        if progress.tty:
            print(file=progress.stream)
        raise
    for p in points:
        if p.status == "pending":
            _from_cache(p)
    progress.running = 0
    progress.show(final=True)
    write_sweep(folder, chapter, points, swept)
    failed = [p for p in points if p.status == "failed"]
    for p in failed:
        where = f" (partial notebook {p.partial})" if p.partial else ""
        log(f"point {p.index} failed {p.error}{where}; traceback in {p.log}")
    log(f"Sweep folder: {folder}")
    log(f"  table  points.csv\n  page   index.html (file://{folder / 'index.html'})")
    return 1 if failed else 0
