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
import html
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


def _fmt(value: Any) -> str:
    """3–4 significant digits for floats, everything else as is."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


def _cell(value: Any) -> str:
    """Full precision, for the CSV."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


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
        writer.writerow([_cell(v) for v in row])
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
        low = [m - min(by_x[x]) for m, x in zip(means, xs, strict=True)]
        high = [max(by_x[x]) - m for m, x in zip(means, xs, strict=True)]
        spread = any(len(by_x[x]) > 1 for x in xs)
        ax.errorbar(
            xs,
            means,
            yerr=[low, high] if spread else None,
            marker="o",
            ms=4,
            capsize=3,
            label=label or None,
        )
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

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:right;white-space:nowrap}th{background:#f3f3f3;position:sticky;top:0}
th.sortable{cursor:pointer}th.sortable:after{content:" \\2195";color:#999}
th[aria-sort=ascending]:after{content:" \\2191";color:#000}
th[aria-sort=descending]:after{content:" \\2193";color:#000}
.failed{background:#fde8e8}.table{overflow:auto;max-height:70vh}
td.yes{background:#c8ecc8}td.no{background:#f6b8b8}td.na{background:#e4e4e4;color:#666}
.multiples{display:flex;flex-wrap:wrap;gap:8px}.multiples figure{margin:0;width:400px}
.multiples img{width:100%;border:1px solid #eee}.multiples figcaption{font-size:12px}
.plots{display:flex;flex-wrap:wrap;gap:8px}.plots figure{margin:0}
.plots img{max-width:100%;border:1px solid #eee}
.key{color:#777;font-size:12px}"""

# Click a column header to sort (numbers as numbers, the rest as text; again to reverse).
_SORT = """document.querySelectorAll("table.sortable").forEach(table => {
  table.querySelectorAll("th").forEach((th, col) => {
    th.classList.add("sortable");
    th.addEventListener("click", () => {
      const up = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      const key = td => td.dataset.v ?? td.textContent;
      const body = table.tBodies[0];
      const rows = [...body.rows];
      rows.sort((a, b) => {
        const x = key(a.cells[col]), y = key(b.cells[col]);
        const nx = parseFloat(x), ny = parseFloat(y);
        const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return up ? c : -c;
      });
      rows.forEach(r => body.appendChild(r));
    });
  });
});"""


def _chapter_figures(chapter: Chapter) -> list[tuple[str, str]]:
    """(name, caption as plain text) of each figure cell of the chapter."""
    nb = json.loads(chapter.path.read_text(encoding="utf-8"))
    figures = []
    for cell in nb.get("cells", []):
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure")
        if cell.get("cell_type") == "code" and figure and figure.get("name"):
            figures.append((figure["name"], plain(str(figure.get("caption", "")))))
    return figures


def _td(value: Any, css: str = "") -> str:
    raw = value if _number(value) and not isinstance(value, bool) else None
    data = f' data-v="{raw!r}"' if raw is not None and math.isfinite(raw) else ""
    cls = f' class="{css}"' if css else ""
    return f"<td{cls}{data}>{html.escape(_fmt(value))}</td>"


def _checks_section(ok: Sequence[PointResult], swept: Sequence[str]) -> str:
    """The verdicts of the "What we checked" rows per point: a coloured grid."""
    esc = html.escape
    claims = list(dict.fromkeys(c.claim for r in ok for c in r.checks))
    if not claims:
        return "<p>The chapter has no <em>What we checked</em> table.</p>"
    head = "".join(f'<th title="{esc(c)}">C{i}</th>' for i, c in enumerate(claims, start=1))
    rows = []
    for r in ok:
        held = {c.claim: c.held for c in r.checks}
        cells = "".join(
            f'<td class="{"na" if held.get(c, "n/a") == "n/a" else held[c]}">'
            f"{esc(held.get(c, 'n/a'))}</td>"
            for c in claims
        )
        rows.append(f"<tr><th>{esc(_label(r.point, swept) or 'the point')}</th>{cells}</tr>")
    legend = "".join(f"<li>C{i}: {esc(c)}</li>" for i, c in enumerate(claims, start=1))
    return (
        f'<table class="checks"><thead><tr><th>point</th>{head}</tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table><ol class="key">{legend}</ol>'
    )


def _figures_section(
    chapter: Chapter, ok: Sequence[PointResult], swept: Sequence[str], folder: Path
) -> str:
    """Each figure of the chapter at every point, side by side (small multiples)."""
    esc = html.escape
    order = sorted(ok, key=lambda r: [_fmt(r.point.plan.parameters[n]) for n in swept])
    multiples = []
    for fig_name, caption in _chapter_figures(chapter):
        tiles = []
        for r in order:
            image = r.point.plan.run_dir / "figures" / f"{fig_name}.png"
            if image.is_file():
                label = esc(_label(r.point, swept) or "the point")
                src = esc(_rel(image, folder))
                tiles.append(
                    f'<figure><a href="{src}"><img loading="lazy" src="{src}" '
                    f'alt="{esc(caption)} ({label})"></a><figcaption>{label}</figcaption></figure>'
                )
        if tiles:
            multiples.append(
                f'<h3>{esc(fig_name)}</h3><p class="key">{esc(caption)}</p>'
                f'<div class="multiples">{"".join(tiles)}</div>'
            )
    return "".join(multiples) or "<p>No figure files in the points' folders.</p>"


def _same_section(ok: Sequence[PointResult], constant: Sequence[str], descriptions: dict) -> str:
    """The glued values that are the same at every point, once."""
    esc = html.escape
    rows = "".join(
        f'<tr><td style="text-align:left">{esc(descriptions.get(n, ""))}</td>'
        f'<td class="key">{esc(n)}</td>'
        + ("<td>n/a</td>" if _missing(n, ok[0].glued.get(n), ok) else _td(ok[0].glued.get(n)))
        + "</tr>"
        for n in constant
    )
    if not rows:
        return "<p>None.</p>"
    return (
        '<table class="sortable"><thead><tr><th>description</th><th>name</th><th>value</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _points_table(
    chapter: Chapter,
    results: Sequence[PointResult],
    swept: Sequence[str],
    folder: Path,
    shown: Sequence[str],
    descriptions: dict,
) -> str:
    """The sortable table of points: swept values, status, checks held, the values shown."""
    esc = html.escape
    ok = [r for r in results if r.ok]
    header = ["point", *swept, "status", "checks held", "seconds", "worker", "page", "error"]
    header_html = "".join(f"<th>{esc(h)}</th>" for h in header) + "".join(
        f'<th title="{esc(descriptions.get(g, g))}">{esc(g)}</th>' for g in shown
    )
    rows = []
    for r in results:
        p = r.point
        if r.ok:
            page = p.plan.run_dir / PAGE_DIR / f"{chapter.name}.html"
            link = f'<a href="{esc(_rel(page, folder))}">{esc(p.plan.run_dir.name)}</a>'
            held = sum(c.held == "yes" for c in r.checks)
            tested = sum(c.held != "n/a" for c in r.checks)
            checks_cell = f'<td data-v="{held}">{held}/{tested}</td>' if r.checks else "<td></td>"
        else:
            links = [f'<a href="{esc(_rel(p.log, folder))}">log</a>']
            if p.partial:
                links.insert(0, f'<a href="{esc(_rel(p.partial, folder))}">partial notebook</a>')
            link, checks_cell = " ".join(links), "<td></td>"
        cells = [
            _td(p.index),
            *(_td(p.plan.parameters[n]) for n in swept),
            _td(p.status),
            checks_cell,
            _td(r.seconds),
            _td(r.worker),
            f"<td>{link}</td>",
            _td(p.error),
            *(
                "<td></td>" if _missing(g, r.glued.get(g), ok) else _td(r.glued.get(g))
                for g in shown
            ),
        ]
        css = ' class="failed"' if not r.ok else ""
        rows.append(f"<tr{css}>{''.join(cells)}</tr>")
    return (
        f'<table class="sortable" id="points-table"><thead><tr>{header_html}</tr></thead>'
        f"<tbody>\n{''.join(rows)}\n</tbody></table>"
    )


def _summary(results: Sequence[PointResult], swept: Sequence[str]) -> str:
    """The opening paragraph: points, swept values, failures, the fixed parameters."""
    esc = html.escape
    failed = sum(not r.ok for r in results)
    params = results[0].point.plan.parameters if results else {}
    fixed = {k: v for k, v in params.items() if k not in swept}
    values = {n: dict.fromkeys(_fmt(r.point.plan.parameters[n]) for r in results) for n in swept}
    axes_text = "; ".join(f"{esc(n)} = {esc(', '.join(v))}" for n, v in values.items())
    seeds = [s for s in swept if is_seed(s)]
    seeds_note = f" Seeds ({esc(', '.join(seeds))}) are aggregated in the plots." if seeds else ""
    return (
        f"<p>{len(results)} point(s); swept: {axes_text or 'nothing (one point)'}; {failed} "
        f"failed.\n{seeds_note} Other parameters: "
        f"<code>{esc(json.dumps(fixed, default=repr))}</code>.\n"
        'Table with every value at full precision: <a href="points.csv">points.csv</a>.</p>'
    )


def index_html(
    chapter: Chapter,
    results: Sequence[PointResult],
    swept: Sequence[str],
    folder: Path,
    log_axes: Collection[str] = (),
) -> str:
    """The standalone ``index.html`` of a sweep (nothing requested from the network).

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
    esc = html.escape
    ok = [r for r in results if r.ok]
    descriptions = glue_descriptions(json.loads(chapter.path.read_text(encoding="utf-8")))
    varying, constant = [], []
    for name in dict.fromkeys(n for r in ok for n in r.glued):
        values = {json.dumps(r.glued.get(name), default=repr) for r in ok}
        (varying if len(values) > 1 else constant).append(name)
    numeric = [n for n in varying if any(_number(r.glued.get(n)) for r in ok)]
    if numeric and len(ok) > 1:
        plots = "".join(
            f'<figure><img alt="{esc(desc)}" title="{esc(name)}" src="{uri}">'
            f'<figcaption class="key">{esc(name)}</figcaption></figure>'
            for name, desc, uri in _value_plots(ok, numeric, swept, descriptions, log_axes)
        )
    else:
        plots = "<p>No numeric glued value differs between the points.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sweep of {esc(chapter.name)}</title>
<style>{_STYLE}</style></head><body>
<h1>Sweep of {esc(chapter.name)}</h1>
{_summary(results, swept)}
<h2 id="checks">What we checked, per point</h2>
{_checks_section(ok, swept)}
<h2 id="figures">The chapter's figures across the points</h2>
{_figures_section(chapter, ok, swept, folder)}
<h2 id="values">Values that differ between points</h2>
<div class="plots">{plots}</div>
<h2 id="same">Values that are the same at every point</h2>
{_same_section(ok, constant, descriptions)}
<h2 id="points">Points</h2>
<div class="table">{_points_table(chapter, results, swept, folder, varying, descriptions)}</div>
<script>{_SORT}</script>
</body></html>
"""


def write_sweep(
    folder: Path,
    chapter: Chapter,
    points: Sequence[Point],
    swept: Sequence[str],
    log_axes: Collection[str] = (),
) -> None:
    """Write ``points.csv`` and ``index.html`` of a sweep into ``folder`` in one atomic step.

    Runs on the client once every point has finished or failed. A successful point whose
    run folder has no page yet gets it first (:func:`dlnbook.export.render_run`; a page
    that cannot be rendered is reported in one line on stderr). Every value shown is read
    from the published run folders.

    Parameters
    ----------
    folder : Path
        The sweep folder (``sweeps/<chapter>-<hash>``); replaced.
    chapter : Chapter
        The swept chapter (its notebook on the client).
    points : sequence of Point
        The points with their status (``done``, ``reused``, ``failed``).
    swept : sequence of str
        Names of the parameters that differ between points; empty for a one-point sweep.
    log_axes : collection of str
        Swept parameters given as ``:log`` grids (drawn on log axes).
    """
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
