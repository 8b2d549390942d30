"""A sweep's ``points.csv`` and ``index.html`` (see ``rerunning.md``), read from the published
run folders, not from what this process saw (another identical sweep may have published)."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import sys
import textwrap
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlnbook.chapters import Chapter
from dlnbook.export import PAGE_DIR, render_run
from dlnbook.glued import Check, checks, figure_cells, glue_descriptions, glued_values, plain
from dlnbook.rundirs import publish_run
from dlnbook.runner import RUN_RECORD

if TYPE_CHECKING:
    from dlnbook.sweep import Point

__all__ = ["PointResult", "index_html", "is_seed", "points_csv", "read_point", "write_sweep"]


def is_seed(name: str) -> bool:
    """Whether a parameter is a random seed (its name contains ``seed``)."""
    return "seed" in name.lower()


@dataclass
class PointResult:
    """What the page shows of one point, read from its published run folder."""

    point: Point
    ok: bool  # the point did not fail
    seconds: float | None = None
    worker: str = ""
    glued: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)


def read_point(point: Point) -> PointResult:
    """A point's seconds and worker (``run.json``), glued values and checks (its executed
    notebook); a failed point keeps what the sweep recorded."""
    result = PointResult(point, point.status != "failed", point.seconds, point.worker)
    record = point.plan.run_dir / RUN_RECORD
    if result.ok and record.is_file():
        recorded = json.loads(record.read_text(encoding="utf-8"))
        result.seconds, result.worker = recorded.get("seconds"), recorded.get("worker", "")
        if point.plan.executed_notebook.is_file():
            nb = json.loads(point.plan.executed_notebook.read_text(encoding="utf-8"))
            result.glued, result.checks = glued_values(nb), checks(nb)
    return result


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _missing(name: str, value: Any, results: Sequence[PointResult]) -> bool:
    """A placeholder: None, nan or infinite, or -1 of a value that is otherwise a count."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return True
    if isinstance(value, int) and not isinstance(value, bool) and value == -1:
        others = [r.glued.get(name) for r in results if name in r.glued]
        return all(isinstance(v, int) and (v >= 0 or v == -1) for v in others)
    return False


def _fmt(value: Any, full: bool = False) -> str:
    """4 significant digits for floats (``full``: ``repr``, for the CSV), lists and dicts as
    JSON, None as nothing, everything else as is."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if full else f"{value:.4g}" if math.isfinite(value) else str(value)
    return json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)


def _rel(path: Path | None, start: Path) -> str:
    return os.path.relpath(path, start) if path else ""


def _label(point: Point, names: Iterable[str]) -> str:
    return ", ".join(f"{n}={_fmt(point.plan.parameters[n])}" for n in names)


def _geometric(values: Sequence[Any]) -> bool:
    """Positive numbers spread geometrically: over two decades or more, or 3 or more values
    evenly spaced on a log axis but not on a linear one."""
    xs = np.unique(np.asarray(values, dtype=float))
    if len(xs) < 2 or xs[0] <= 0:
        return False
    ratios, steps = xs[1:] / xs[:-1], np.diff(xs)
    even_ratio = np.ptp(ratios) <= 1e-6 * ratios.max()
    uneven_step = np.ptp(steps) > 1e-6 * steps.max()
    return bool(xs[-1] >= 50 * xs[0] or (len(xs) >= 3 and even_ratio and uneven_step))


def points_csv(results: Sequence[PointResult], swept: Sequence[str], folder: Path) -> str:
    """The ``points.csv`` text: one row per point, values at full precision."""
    glued = list(dict.fromkeys(name for r in results for name in r.glued))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["point", *swept, "status", "seconds", "worker", "run", "error", *glued])
    for r in results:
        p = r.point
        seconds = "" if r.seconds is None else f"{r.seconds:.3f}"
        run = _rel(p.plan.run_dir, folder) if r.ok else _rel(p.log, folder)
        row = [p.index, *(p.plan.parameters[n] for n in swept), p.status, seconds, r.worker]
        row += [run, p.error, *(r.glued.get(g) for g in glued)]
        writer.writerow([_fmt(v, full=True) for v in row])
    return out.getvalue()


def _panel(ax: Any, results: Sequence[PointResult], name: str, param, axes, log_axes) -> int:
    """Draw glued value ``name`` against swept ``param`` (None: only seeds vary) on ``ax``, a
    line per value of the other ``axes``, seeds as mean with min–max bars, a log axis for
    ``log_axes`` and geometric grids; returns the number of points without a value."""
    xs_all = [r.point.plan.parameters[param] for r in results] if param else [0]
    numeric_x = all(_number(x) for x in xs_all)
    categories = list(dict.fromkeys(_fmt(x) for x in xs_all))
    groups: dict[str, dict[Any, list[float]]] = {}
    missing = 0
    for r in results:
        value = r.glued.get(name)
        if _missing(name, value, results) or not _number(value):
            missing += 1
            continue
        x = r.point.plan.parameters[param] if param else 0
        line = groups.setdefault(_label(r.point, [a for a in axes if a != param]), {})
        line.setdefault(x if numeric_x else categories.index(_fmt(x)), []).append(float(value))
    for label, by_x in groups.items():
        xs = sorted(by_x)
        ys = [by_x[x] for x in xs]
        means = np.array([sum(y) / len(y) for y in ys])
        bars = [means - [min(y) for y in ys], [max(y) for y in ys] - means]
        spread = any(len(y) > 1 for y in ys)
        style = {"marker": "o", "ms": 4, "capsize": 3, "label": label or None}
        ax.errorbar(xs, means, yerr=bars if spread else None, **style)
    if param is not None and numeric_x and (param in log_axes or _geometric(xs_all)):
        ax.set_xscale("log")
    if param is not None and not numeric_x:
        ax.set_xticks(range(len(categories)), categories, rotation=30, fontsize="small")
    if param is None:
        ax.set_xticks([])
    ys = [y for by_x in groups.values() for v in by_x.values() for y in v]
    if ys and min(ys) > 0 and max(ys) >= 1e3 * min(ys):
        ax.set_yscale("log")
    ax.set_xlabel(param or "")
    ax.grid(alpha=0.3)
    if len(groups) > 1:
        ax.legend(fontsize="x-small", frameon=False)
    return missing


def _value_plots(results: Sequence[PointResult], names, swept, descriptions, log_axes) -> list:
    """(name, description, PNG data URI) of a figure of each glued value of ``names``."""
    from matplotlib.figure import Figure  # no pyplot: no backend, no figure left open

    axes = [s for s in swept if not is_seed(s)]
    seeds = [s for s in swept if is_seed(s)]
    columns = axes or [None]
    figures = []
    for name in names:
        fig = Figure(figsize=(4.2 * len(columns), 3.2), layout="constrained")
        grid = fig.subplots(1, len(columns), squeeze=False)
        for ax, param in zip(grid[0], columns, strict=True):  # each panel: the same count
            missing = _panel(ax, results, name, param, axes, log_axes)
        grid[0][0].set_ylabel(name, fontsize="small")
        notes = [f"mean over {', '.join(seeds)}; bars: min–max"] if seeds else []
        if missing:
            notes.append(f"{missing} point(s) without a value (not reached / n/a) left out")
        title = textwrap.fill(descriptions.get(name, name), 90)
        fig.suptitle(title + ("\n(" + "; ".join(notes) + ")" if notes else ""), fontsize="small")
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100, metadata={"Software": None})
        uri = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
        figures.append((name, descriptions.get(name, name), uri))
    return figures


def _td(value: Any, css: str = "") -> tuple[str, str | None, str]:
    """A table cell of the template: (text, sort value of a finite number, class)."""
    number = _number(value) and math.isfinite(value)
    return _fmt(value), repr(value) if number else None, css


def _figure_tiles(nb: dict, ok: Sequence[PointResult], swept: Sequence[str], folder: Path) -> list:
    """Each figure of the chapter ``nb`` with its image at every point that has it:
    (name, caption, [(image, label of the point)])."""
    order = sorted(ok, key=lambda r: [_fmt(r.point.plan.parameters[n]) for n in swept])
    figures = []
    for name, caption in ((f.get("name"), f.get("caption", "")) for _, f in figure_cells(nb)):
        images = [(r, r.point.plan.run_dir / "figures" / f"{name}.png") for r in order]
        tiles = [
            (_rel(image, folder), _label(r.point, swept) or "the point")
            for r, image in images
            if image.is_file()
        ]
        if name and tiles:
            figures.append((name, plain(str(caption)), tiles))
    return figures


def _point_row(r: PointResult, chapter: Chapter, swept, folder: Path, shown, ok) -> tuple:
    """A row of the points table: (class, cells before the links, links, cells after)."""
    p = r.point
    checks_cell = _td("")
    if r.ok:
        page = p.plan.run_dir / PAGE_DIR / f"{chapter.name}.html"
        links = [(_rel(page, folder), p.plan.run_dir.name)]
        held = sum(c.held == "yes" for c in r.checks)
        tested = sum(c.held != "n/a" for c in r.checks)
        checks_cell = (f"{held}/{tested}", str(held), "") if r.checks else checks_cell
    else:
        links = [(_rel(p.partial, folder), "partial notebook")] if p.partial else []
        links.append((_rel(p.log, folder), "log"))
    before = [_td(p.index), *(_td(p.plan.parameters[n]) for n in swept), _td(p.status)]
    before += [checks_cell, _td(r.seconds), _td(r.worker)]
    values = [_td(None if _missing(g, r.glued.get(g), ok) else r.glued.get(g)) for g in shown]
    return "" if r.ok else "failed", before, links, [_td(p.error), *values]


def index_html(
    chapter: Chapter,
    results: Sequence[PointResult],
    swept: Sequence[str],
    folder: Path,
    log_axes: Collection[str] = (),
) -> str:
    """The sweep's page (template ``dlnbook/templates/sweep.html``) of the ``results`` of
    ``chapter``, linking relative to the sweep ``folder``; ``swept``: the parameters that
    differ between points (may be empty), ``log_axes``: those given as ``:log`` grids."""
    import jinja2

    ok = [r for r in results if r.ok]
    nb = json.loads(chapter.path.read_text(encoding="utf-8"))
    descriptions = glue_descriptions(nb)
    varying, constant = [], []
    for name in dict.fromkeys(n for r in ok for n in r.glued):
        values = {json.dumps(r.glued.get(name), default=repr) for r in ok}
        (varying if len(values) > 1 else constant).append(name)
    numeric = [n for n in varying if any(_number(r.glued.get(n)) for r in ok)]
    plotted = numeric and len(ok) > 1
    params = results[0].point.plan.parameters if results else {}
    axes = {n: dict.fromkeys(_fmt(r.point.plan.parameters[n]) for r in results) for n in swept}
    head = ["point", *swept, "status", "checks held", "seconds", "worker", "page", "error"]
    claims = list(dict.fromkeys(c.claim for r in ok for c in r.checks))
    verdicts = [{c.claim: c.held for c in r.checks} for r in ok]
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dlnbook"), autoescape=True, keep_trailing_newline=True
    )
    return env.get_template("sweep.html").render(
        name=chapter.name,
        points=[_point_row(r, chapter, swept, folder, varying, ok) for r in results],
        axes="; ".join(f"{n} = {', '.join(v)}" for n, v in axes.items()),
        failed=len(results) - len(ok),
        seeds=", ".join(s for s in swept if is_seed(s)),
        fixed=json.dumps({k: v for k, v in params.items() if k not in swept}, default=repr),
        claims=claims,
        verdict_rows=[
            (_label(r.point, swept) or "the point", [held.get(c, "n/a") for c in claims])
            for r, held in zip(ok, verdicts, strict=True)
        ],
        figures=_figure_tiles(nb, ok, swept, folder),
        plots=_value_plots(ok, numeric, swept, descriptions, log_axes) if plotted else [],
        same=[
            (descriptions.get(n, ""), n, _td("n/a" if _missing(n, v, ok) else v))
            for n, v in ((n, ok[0].glued.get(n)) for n in constant)
        ],
        header=[(h, "") for h in head] + [(g, descriptions.get(g, g)) for g in varying],
    )


def write_sweep(
    folder: Path,
    chapter: Chapter,
    points: Sequence[Point],
    swept: Sequence[str],
    log_axes: Collection[str] = (),
) -> None:
    """Write ``points.csv`` and ``index.html`` (:func:`index_html`) into ``folder`` (replaced)
    in one atomic step, once every point has finished; a successful point without a page
    gets it first (:func:`dlnbook.export.render_run`; a failure is one line on stderr)."""
    for p in points:
        page = p.plan.run_dir / PAGE_DIR / f"{chapter.name}.html"
        if p.status != "failed" and p.plan.executed_notebook.is_file() and not page.is_file():
            try:
                render_run(p.plan)
            except RuntimeError as exc:  # the summary still links the point's notebook
                print(f"point {p.index}: no page: {exc}", file=sys.stderr)
    results = [read_point(p) for p in points]
    files = {
        "points.csv": points_csv(results, swept, folder).encode(),
        "index.html": index_html(chapter, results, swept, folder, log_axes).encode(),
    }
    publish_run(folder, files, replace=True)
