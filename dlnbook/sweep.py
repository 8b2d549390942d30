"""Sweeps: one chapter over a grid of parameters, each point exactly a ``dln-book run``
through the one driver; then the sweep's folder ``sweeps/<chapter>-<hash>/`` (the hash covers
the points) with ``points.csv`` and ``index.html`` (:mod:`dlnbook.sweeppage`).
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dlnbook.chapters import Chapter, ChapterError, load_yaml, parse_override
from dlnbook.glued import glued_values
from dlnbook.rundirs import prune_stale
from dlnbook.runner import ChapterFailure, Outcome, Plan, run_plans
from dlnbook.sweeppage import write_sweep

__all__ = ["MAX_POINTS", "Point", "glued_values", "grid", "parse_axis", "points_of", "run_sweep"]
__all__ += ["sweep_folder", "write_sweep"]

#: Largest grid accepted without an explicit confirmation (``--yes``).
MAX_POINTS = 10_000
_RANGE = re.compile(r"\s*([^:\[\]'\"]+):([^:\[\]'\"]+):(\d+)(:log)?\s*")


def parse_axis(text: str, default: Any) -> tuple[str, list[Any]]:
    """Name and values of ``NAME=V1,V2,...`` (Python literals; ``[3, 2]`` is one value),
    ``NAME=A:B:STEPS`` or ``NAME=A:B:STEPS:log``; integers for an int ``default``."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ChapterError(f"expected NAME=V1,V2,... or NAME=A:B:STEPS, got {text!r}")
    if not (match := _RANGE.fullmatch(raw)):
        try:
            tree = ast.parse(f"[{raw}]", mode="eval")
            items = [ast.get_source_segment(f"[{raw}]", elt) for elt in tree.body.elts]
        except SyntaxError:
            items = raw.split(",")
        values = [parse_override(f"{name}={item}")[1] for item in items if item.strip()]
        if not values:
            raise ChapterError(f"no values for {name!r} in {text!r}")
        return name, values
    try:
        low, high, steps = float(match[1]), float(match[2]), int(match[3])
    except ValueError:
        raise ChapterError(f"cannot read the range {raw!r} of {name!r}") from None
    if steps < 1:
        raise ChapterError(f"the range {raw!r} of {name!r} is empty (STEPS must be >= 1)")
    if match[4] and (low <= 0 or high <= 0):
        raise ChapterError(f"the log range {raw!r} of {name!r} needs positive ends")
    if match[4] and steps > 1:
        ratio = math.log(high / low) / (steps - 1)
        values = [low * math.exp(ratio * i) for i in range(steps - 1)] + [high]
    else:
        values = [low + (high - low) * i / max(1, steps - 1) for i in range(steps)]
    rounded = [round(v) for v in values]
    if isinstance(default, int) and not isinstance(default, bool):
        if all(abs(v - r) <= 1e-9 * max(1.0, abs(v)) for v, r in zip(values, rounded, strict=True)):
            return name, list(dict.fromkeys(rounded))
    return name, values


def grid(axes: Mapping[str, Sequence[Any]], points: Sequence[Mapping[str, Any]] = ()) -> list[dict]:
    """Every combination of the axes for every explicit point, each once, in order."""
    seen: dict[str, dict[str, Any]] = {}
    for base in list(points) or [{}]:
        for combo in itertools.product(*axes.values()):
            point = {**base, **dict(zip(axes, combo, strict=True))}
            seen.setdefault(json.dumps(point, sort_keys=True, default=repr), point)
    return list(seen.values())


def _points_file(path: Path) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
    """Axes (``NAME: [V1, ...]``) or explicit points (``points: [{NAME: V}]``) of a file."""
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
    axes = {
        str(name): values if isinstance(values, list) else [values] for name, values in data.items()
    }
    if empty := [name for name, values in axes.items() if not values]:
        raise ChapterError(f"sweep file {path}: no values for {empty[0]!r}")
    return axes, []


def points_of(
    chapter: Chapter, items: Sequence[str], path: Path | None = None, yes: bool = False
) -> list[dict[str, Any]]:
    """The overrides of every point of the ``-p`` axes ``items`` and the sweep file ``path``
    (more than :data:`MAX_POINTS` only if ``yes``)."""
    axes, explicit = _points_file(path) if path else ({}, [])
    for item in items:
        name, values = parse_axis(item, chapter.defaults.get(item.partition("=")[0].strip()))
        if name in axes or any(name in point for point in explicit):
            raise ChapterError(f"parameter {name!r} is given in {path} and with -p")
        axes[name] = values
    if not axes and not explicit:
        raise ChapterError("nothing to sweep: give -p NAME=V1,V2,... or --params FILE.yml")
    size = math.prod(len(v) for v in axes.values()) * max(1, len(explicit))
    if size > MAX_POINTS and not yes:
        raise ChapterError(
            f"the grid has {size} points (more than {MAX_POINTS}); pass --yes to run it"
        )
    return grid(axes, explicit)


@dataclass
class Point:
    """One point (numbered from 1) and what became of it: ``status`` ``pending``, ``done``,
    ``reused`` or ``failed``."""

    index: int
    overrides: dict[str, Any]
    plan: Plan
    status: str = "pending"
    seconds: float | None = None
    worker: str = ""
    error: str = ""
    partial: Path | None = None
    log: Path | None = None


def sweep_folder(sweeps_dir: Path, chapter: Chapter, plans: Iterable[Plan]) -> Path:
    digest = hashlib.sha256("\n".join(sorted(p.key for p in plans)).encode()).hexdigest()
    return sweeps_dir.resolve() / f"{chapter.name}-{digest[:12]}"


class _Progress:
    """The ``progress`` of :func:`dlnbook.runner.run_plans`: one tqdm line on stderr."""

    def __init__(self, points: Sequence[Point]) -> None:
        self.points = {p.plan.key: p for p in points}
        self.failed = 0
        self.bar: Any = None

    def start(self, stale: Sequence[Plan]) -> None:
        self.reused, form = len(self.points) - len(stale), "{desc}, ETA {remaining}"
        self.bar = tqdm(
            total=len(self.points), initial=self.reused, file=sys.stderr, bar_format=form
        )
        self.tick(())

    def tick(self, running: Sequence[int]) -> None:
        reused = f" ({self.reused} reused)" if self.reused else ""
        self.bar.set_description_str(
            f"sweep: {self.bar.n - self.failed}/{self.bar.total} done{reused}, "
            f"{len(running)} running, {self.failed} failed"
        )

    def outcome(self, index: int, outcome: Outcome) -> None:
        point = self.points[outcome.plan.key]
        point.status = "failed" if outcome.error else "done"
        point.seconds, point.worker = outcome.seconds, outcome.worker
        point.error, point.partial, point.log = outcome.error or "", outcome.partial, outcome.log
        self.failed += bool(outcome.error)
        self.bar.update(1)

    def close(self) -> None:
        self.tick(())
        self.bar.close()


def run_sweep(
    chapter: Chapter,
    points: list[Point],
    swept: Sequence[str],
    folder: Path,
    log: Callable[[str], None] = print,
    **driver: Any,
) -> int:
    """Execute the points through :func:`dlnbook.runner.run_plans` (``**driver``: its
    arguments), then write the sweep ``folder``; return 1 if a point failed, else 0. On
    Ctrl-C the finished points stay in ``runs/`` and the folder is not written."""
    progress = _Progress(points)
    prune_stale(folder.parent)  # what a killed sweep left behind
    try:
        run_plans([p.plan for p in points], log=log, progress=progress, noun="point", **driver)
    except ChapterFailure:
        pass  # recorded in the points
    finally:
        if progress.bar is not None:
            progress.close()
    if progress.bar is None:  # nothing was executed
        progress.start([])
        progress.close()
    for p in points:
        p.status = "reused" if p.status == "pending" else p.status
    write_sweep(folder, chapter, points, swept)
    failed = [p for p in points if p.status == "failed"]
    for p in failed:
        where = f" (partial notebook {p.partial})" if p.partial else ""
        log(f"point {p.index} failed {p.error}{where}; traceback in {p.log}")
    log(f"Sweep folder: {folder}")
    log(f"  table  points.csv\n  page   index.html (file://{folder / 'index.html'})")
    return 1 if failed else 0
