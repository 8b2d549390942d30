"""Sweeps: one chapter over a grid of parameters, each point exactly a ``dln-book run``.

Every point is planned like ``dln-book run`` (same key, same ``runs/<chapter>-<hash>/``
folder, so sweeps and runs reuse each other's results) and executed by the one
driver (:func:`dlnbook.runner.run_plans`). The sweep's own folder ``sweeps/<chapter>-<hash>/``
(the hash covers the set of points) holds

- ``points.csv``: one row per point: the swept parameters, status (``done``, ``reused``,
  ``failed``), seconds, worker, run folder, error, and every scalar the chapter glued;
- ``index.html``: a standalone offline page with that table, a plot of every numeric glued
  value against each swept parameter (one line per value of the other swept parameters),
  and links to each point's own page.

It is written in one atomic step once every point has finished or failed.
"""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import html
import io
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlnbook.chapters import Chapter, ChapterError, effective_parameters, parse_override
from dlnbook.export import PAGE_DIR
from dlnbook.rundirs import prune_stale, publish_run
from dlnbook.runner import RUN_RECORD, ChapterFailure, Outcome, Plan, run_plans

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
_NUMPY_SCALAR = re.compile(r"np\.(?:float|int|uint|bool|complex|str)\w*\((.*)\)", re.S)


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
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ChapterError(f"cannot read sweep file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ChapterError(f"sweep file {path} is not valid YAML{where}: {problem}") from None
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


def _scalar(text: str) -> Any:
    match = _NUMPY_SCALAR.fullmatch(text.strip())
    try:
        value = ast.literal_eval(match[1] if match else text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, bool | int | float | str) else None


def glued_values(notebook: Path) -> dict[str, Any]:
    """Scalars the executed chapter glued (``myst_nb.glue``): name -> value.

    Values are read from the glued ``text/plain`` representation (``repr`` of a float is
    exact); non-scalar glued objects (arrays, figures) are left out.
    """
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    values: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            scrap = output.get("metadata", {}).get("scrapbook")
            if not scrap:
                continue
            text = output.get("data", {}).get(scrap.get("mime_prefix", "") + "text/plain")
            value = _scalar("".join(text) if isinstance(text, list) else text or "")
            if value is not None:
                values[scrap["name"]] = value
    return values


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


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


def _rel(path: Path | None, start: Path) -> str:
    return os.path.relpath(path, start) if path else ""


def _columns(points: Sequence[Point], swept: Sequence[str]) -> tuple[list[str], list[str]]:
    glued = list(dict.fromkeys(name for p in points for name in p.glued))
    head = ["point", *swept, "status", "seconds", "worker", "run", "error"]
    return head, glued


def points_csv(points: Sequence[Point], swept: Sequence[str], folder: Path) -> str:
    """The ``points.csv`` text: one row per point."""
    head, glued = _columns(points, swept)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(head + glued)
    for p in points:
        seconds = "" if p.seconds is None else f"{p.seconds:.3f}"
        run = _rel(p.plan.run_dir, folder) if p.status != "failed" else _rel(p.log, folder)
        row = [p.index, *(p.plan.parameters[n] for n in swept), p.status, seconds, p.worker]
        writer.writerow(
            [_cell(v) for v in [*row, run, p.error]] + [_cell(p.glued.get(g)) for g in glued]
        )
    return out.getvalue()


def _numeric(values: Iterable[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _panel(ax: Any, points: Sequence[Point], name: str, param: str, swept: Sequence[str]) -> None:
    """Glued value ``name`` against ``param``: one line per value of the other swept
    parameters; a numeric axis (logarithmic over two decades or more) or categories."""
    xs_all = [p.plan.parameters[param] for p in points]
    numeric_x = _numeric(xs_all)
    categories = list(dict.fromkeys(_cell(x) for x in xs_all))

    def position(p: Point) -> Any:
        value = p.plan.parameters[param]
        return value if numeric_x else categories.index(_cell(value))

    others = [s for s in swept if s != param]
    lines: dict[str, list[tuple[Any, Any]]] = {}
    for p in points:
        if name in p.glued:
            label = ", ".join(f"{o}={_cell(p.plan.parameters[o])}" for o in others)
            lines.setdefault(label, []).append((position(p), p.glued[name]))
    for label, pairs in lines.items():
        xs, ys = zip(*sorted(pairs), strict=True)
        ax.plot(xs, ys, marker="o", ms=3, label=label or None)
    if numeric_x and min(xs_all) > 0 and max(xs_all) >= 50 * min(xs_all):
        ax.set_xscale("log")
    if not numeric_x:
        ax.set_xticks(range(len(categories)), categories, rotation=30, fontsize="small")
    ys_all = [y for pairs in lines.values() for _, y in pairs]
    if ys_all and min(ys_all) > 0 and max(ys_all) >= 1e3 * min(ys_all):
        ax.set_yscale("log")
    ax.set(xlabel=param, ylabel=name)
    ax.grid(alpha=0.3)
    if len(lines) > 1:
        ax.legend(fontsize="x-small", frameon=False)


def _plots(points: Sequence[Point], swept: Sequence[str]) -> list[tuple[str, str]]:
    """(glued name, PNG data URI) of one figure per numeric glued value: a panel per swept
    parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [p for p in points if p.status != "failed"]
    names = [
        g
        for g in dict.fromkeys(n for p in ok for n in p.glued)
        if _numeric(p.glued[g] for p in ok if g in p.glued)
    ]
    figures = []
    for name in names:
        size = (3.6 * len(swept), 2.8)
        fig, axes = plt.subplots(1, len(swept), figsize=size, squeeze=False, layout="constrained")
        for ax, param in zip(axes[0], swept, strict=True):
            _panel(ax, ok, name, param, swept)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
        plt.close(fig)
        data = base64.b64encode(buffer.getvalue()).decode()
        figures.append((name, f"data:image/png;base64,{data}"))
    return figures


_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:right;white-space:nowrap}th{background:#f3f3f3;position:sticky;top:0}
.failed{background:#fde8e8}.figs img{margin:4px;border:1px solid #eee}
.table{overflow:auto;max-height:70vh}"""


def index_html(
    chapter: Chapter, points: Sequence[Point], swept: Sequence[str], folder: Path
) -> str:
    """The standalone ``index.html`` of a sweep (no external resource)."""
    head, glued = _columns(points, swept)
    esc = html.escape
    rows = []
    for p in points:
        if p.status == "failed":
            links = [f'<a href="{esc(_rel(p.log, folder))}">log</a>']
            if p.partial:
                links.insert(0, f'<a href="{esc(_rel(p.partial, folder))}">partial notebook</a>')
            link = " ".join(links)
        else:
            page = p.plan.run_dir / PAGE_DIR / f"{chapter.name}.html"
            link = f'<a href="{esc(_rel(page, folder))}">{esc(p.plan.run_dir.name)}</a>'
        seconds = "" if p.seconds is None else f"{p.seconds:.1f}"
        cells = [
            str(p.index),
            *(esc(_cell(p.plan.parameters[n])) for n in swept),
            esc(p.status),
            seconds,
            esc(p.worker),
            link,
            esc(p.error),
            *(esc(_cell(p.glued.get(g))) for g in glued),
        ]
        css = ' class="failed"' if p.status == "failed" else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{esc(h)}</th>" for h in head + glued)
    failed = sum(p.status == "failed" for p in points)
    fixed = {k: v for k, v in points[0].plan.parameters.items() if k not in swept} if points else {}
    figures = "".join(
        f'<img alt="{esc(name)}" title="{esc(name)}" src="{uri}">'
        for name, uri in _plots(points, swept)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sweep of {esc(chapter.name)}</title>
<style>{_STYLE}</style></head><body>
<h1>Sweep of {esc(chapter.name)}</h1>
<p>{len(points)} points over {esc(", ".join(swept) or "no parameter")}; {failed} failed.
Other parameters: <code>{esc(json.dumps(fixed, default=repr))}</code>.
Table: <a href="points.csv">points.csv</a>.</p>
<h2>Glued values against each swept parameter</h2>
<div class="figs">{figures or "<p>No numeric glued value.</p>"}</div>
<h2>Points</h2>
<div class="table"><table><thead><tr>{header}</tr></thead><tbody>
{"".join(rows)}
</tbody></table></div>
</body></html>
"""


def write_sweep(
    folder: Path, chapter: Chapter, points: Sequence[Point], swept: Sequence[str]
) -> None:
    """Write ``points.csv`` and ``index.html`` into ``folder`` in one atomic step."""
    files = {
        "points.csv": points_csv(points, swept, folder).encode(),
        "index.html": index_html(chapter, points, swept, folder).encode(),
    }
    publish_run(folder, files, replace=True)


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
