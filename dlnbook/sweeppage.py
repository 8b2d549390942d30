"""The summary of a sweep: ``points.csv`` and ``index.html`` in ``sweeps/<chapter>-<hash>/``.

Everything is read from the published run folders, not from what this process saw while the
points ran (two identical sweeps at once may each execute a point, and only one result is
published): the seconds and worker from ``run.json``, the glued values and the "What we
checked" verdicts from the executed notebook, the figures from ``figures/<name>.png``.

``index.html`` is one offline page (no network, no external file but the points' own
figures and pages, linked):

- the verdicts of the chapter's "What we checked" rows per point, as a coloured grid;
- each figure of the chapter across the points, as small multiples labelled with the swept
  values (the figures' data differ from chapter to chapter; their images do not);
- one plot per glued value that varies, against each swept parameter (one line per value
  of the other swept parameters), titled with the value's description from the chapter's
  text; logarithmic axes for geometric grids; seeds (parameters named ``*seed*``) are not
  an axis: their points are aggregated as mean with the min–max spread; placeholders
  (``nan``, ``-1`` of a count) are left out and counted;
- the glued values that are the same at every point, once;
- the table of points, 4 significant digits, sorted by a click on a column header (a few
  lines of inline JavaScript).
"""

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

from dlnbook.chapters import Chapter
from dlnbook.export import PAGE_DIR, render_run
from dlnbook.glued import Check, checks, glue_descriptions, glued_values, plain
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
    seconds: float | None = None
    worker: str = ""
    glued: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.point.status != "failed"


def read_point(point: Point) -> PointResult:
    """A point's results from its run folder (``run.json``, the executed notebook); a failed
    point keeps what the sweep recorded."""
    result = PointResult(point, point.seconds, point.worker)
    record_path = point.plan.run_dir / RUN_RECORD
    if not result.ok or not record_path.is_file():
        return result
    record = json.loads(record_path.read_text(encoding="utf-8"))
    result.seconds, result.worker = record.get("seconds"), record.get("worker", "")
    notebook = point.plan.executed_notebook
    if notebook.is_file():
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        result.glued, result.checks = glued_values(nb), checks(nb)
    return result


# --- values ------------------------------------------------------------------------------


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
    """Positive numbers spread geometrically: evenly on a log axis (3 or more values) or
    over two decades or more."""
    xs = sorted({float(v) for v in values})
    if len(xs) < 2 or xs[0] <= 0:
        return False
    if xs[-1] >= 50 * xs[0]:
        return True
    if len(xs) < 3:
        return False
    ratios = [b / a for a, b in zip(xs, xs[1:], strict=False)]
    steps = [b - a for a, b in zip(xs, xs[1:], strict=False)]
    even_ratio = max(ratios) - min(ratios) <= 1e-6 * max(ratios)
    even_step = max(steps) - min(steps) <= 1e-6 * max(steps)
    return even_ratio and not even_step


# --- points.csv --------------------------------------------------------------------------


def points_csv(results: Sequence[PointResult], swept: Sequence[str], folder: Path) -> str:
    """The ``points.csv`` text: one row per point, values at full precision."""
    glued = list(dict.fromkeys(name for r in results for name in r.glued))
    head = ["point", *swept, "status", "seconds", "worker", "run", "error", *glued]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(head)
    for r in results:
        p = r.point
        seconds = "" if r.seconds is None else f"{r.seconds:.3f}"
        run = _rel(p.plan.run_dir, folder) if r.ok else _rel(p.log, folder)
        row = [p.index, *(p.plan.parameters[n] for n in swept), p.status, seconds, r.worker]
        row += [run, p.error, *(r.glued.get(g) for g in glued)]
        writer.writerow([_fmt(v, full=True) for v in row])
    return out.getvalue()


# --- plots -------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _panel(
    ax: Any,
    results: Sequence[PointResult],
    name: str,
    param: str | None,
    axes: Sequence[str],
    log_axes: Collection[str],
) -> int:
    """Glued value ``name`` against ``param`` (None: against nothing, only seeds vary), one
    line per value of the other non-seed swept parameters, seeds aggregated (mean, min–max
    bars). Returns the number of points without a value."""
    xs_all = [r.point.plan.parameters[param] for r in results] if param else [0]
    numeric_x = _number(xs_all[0]) and all(_number(x) for x in xs_all)
    categories = list(dict.fromkeys(_fmt(x) for x in xs_all))

    def position(r: PointResult) -> Any:
        if param is None:
            return 0
        value = r.point.plan.parameters[param]
        return value if numeric_x else categories.index(_fmt(value))

    others = [a for a in axes if a != param]
    groups: dict[str, dict[Any, list[float]]] = {}
    missing = 0
    for r in results:
        value = r.glued.get(name)
        if _missing(name, value, results) or not _number(value):
            missing += 1
            continue
        line = groups.setdefault(_label(r.point, others), {})
        line.setdefault(position(r), []).append(float(value))
    for label, by_x in groups.items():
        xs = sorted(by_x)
        means = [sum(by_x[x]) / len(by_x[x]) for x in xs]
        bars = [[m - min(by_x[x]) for m, x in zip(means, xs, strict=True)]]
        bars += [[max(by_x[x]) - m for m, x in zip(means, xs, strict=True)]]
        spread = any(len(by_x[x]) > 1 for x in xs)
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


def _value_plots(
    results: Sequence[PointResult],
    names: Sequence[str],
    swept: Sequence[str],
    descriptions: dict[str, str],
    log_axes: Collection[str],
) -> list[tuple[str, str, str]]:
    """(name, description, PNG data URI) of one figure per glued value that varies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = [s for s in swept if not is_seed(s)]
    seeds = [s for s in swept if is_seed(s)]
    figures = []
    for name in names:
        columns = axes or [None]
        fig, grid = plt.subplots(
            1, len(columns), figsize=(4.2 * len(columns), 3.2), squeeze=False, layout="constrained"
        )
        missing = 0
        for ax, param in zip(grid[0], columns, strict=True):
            missing = _panel(ax, results, name, param, axes, log_axes)
        grid[0][0].set_ylabel(name, fontsize="small")
        title = textwrap.fill(descriptions.get(name, name), 90)
        notes = []
        if seeds:
            notes.append(f"mean over {', '.join(seeds)}; bars: min–max")
        if missing:
            notes.append(f"{missing} point(s) without a value (not reached / n/a) left out")
        if notes:
            title += "\n(" + "; ".join(notes) + ")"
        fig.suptitle(title, fontsize="small")
        figures.append((name, descriptions.get(name, name), _png(fig)))
    return figures


# --- the page ----------------------------------------------------------------------------


def _chapter_figures(chapter: Chapter) -> list[tuple[str, str]]:
    """(name, caption as plain text) of each figure cell of the chapter."""
    nb = json.loads(chapter.path.read_text(encoding="utf-8"))
    figures = []
    for cell in nb.get("cells", []):
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure")
        if cell.get("cell_type") == "code" and figure and figure.get("name"):
            figures.append((figure["name"], plain(str(figure.get("caption", "")))))
    return figures


def _td(value: Any, css: str = "") -> tuple[str, str | None, str]:
    """A table cell of the template: (text, sort value of a finite number, class)."""
    number = _number(value) and math.isfinite(value)
    return _fmt(value), repr(value) if number else None, css


def _figure_tiles(
    chapter: Chapter, ok: Sequence[PointResult], swept: Sequence[str], folder: Path
) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Each figure of the chapter with its image at every point that has it (small
    multiples): (name, caption, [(image, label of the point)])."""
    order = sorted(ok, key=lambda r: [_fmt(r.point.plan.parameters[n]) for n in swept])
    figures = []
    for name, caption in _chapter_figures(chapter):
        images = [(r, r.point.plan.run_dir / "figures" / f"{name}.png") for r in order]
        tiles = [
            (_rel(image, folder), _label(r.point, swept) or "the point")
            for r, image in images
            if image.is_file()
        ]
        if tiles:
            figures.append((name, caption, tiles))
    return figures


def _verdict_grid(ok: Sequence[PointResult], swept: Sequence[str]) -> dict[str, list]:
    """The claims of the "What we checked" rows and, per point, its label and verdicts."""
    claims = list(dict.fromkeys(c.claim for r in ok for c in r.checks))
    rows = []
    for r in ok:
        held = {c.claim: c.held for c in r.checks}
        rows.append((_label(r.point, swept) or "the point", [held.get(c, "n/a") for c in claims]))
    return {"claims": claims, "verdict_rows": rows}


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
    """The standalone ``index.html`` of a sweep (nothing requested from the network), from
    the template ``dlnbook/templates/sweep.html``.

    Parameters
    ----------
    chapter : Chapter
        The swept chapter.
    results : sequence of PointResult
        The points (:func:`read_point`).
    swept : sequence of str
        The parameters that differ between points (may be empty: a one-point sweep).
    folder : Path
        The sweep folder (links are relative to it).
    log_axes : collection of str
        Swept parameters given as ``:log`` grids (geometric grids are found anyway).
    """
    import jinja2

    ok = [r for r in results if r.ok]
    descriptions = glue_descriptions(json.loads(chapter.path.read_text(encoding="utf-8")))
    varying, constant = [], []
    for name in dict.fromkeys(n for r in ok for n in r.glued):
        values = {json.dumps(r.glued.get(name), default=repr) for r in ok}
        (varying if len(values) > 1 else constant).append(name)
    numeric = [n for n in varying if any(_number(r.glued.get(n)) for r in ok)]
    plotted = numeric and len(ok) > 1
    params = results[0].point.plan.parameters if results else {}
    axes = {n: dict.fromkeys(_fmt(r.point.plan.parameters[n]) for r in results) for n in swept}
    head = ["point", *swept, "status", "checks held", "seconds", "worker", "page", "error"]
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
        **_verdict_grid(ok, swept),
        figures=_figure_tiles(chapter, ok, swept, folder),
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
    """Write ``points.csv`` and ``index.html`` of a sweep into ``folder`` (replaced) in one
    atomic step, on the client once every point (status ``done``, ``reused`` or ``failed``)
    has finished. A successful point whose run folder has no page gets it first
    (:func:`dlnbook.export.render_run`; one that cannot be rendered is reported in one line
    on stderr). ``swept``: the parameters that differ between points (empty for one point);
    ``log_axes``: those given as ``:log`` grids."""
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
