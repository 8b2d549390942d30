"""The summary of a sweep (``points.csv``, ``index.html``), written from run folders made here
(no kernel): one-point sweeps, values read from the published folders, what the page shows."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import matplotlib
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from dlnbook.chapters import load_chapter
from dlnbook.runner import plan_points
from dlnbook.sweep import Point, sweep_folder
from dlnbook.sweeppage import _geometric, _panel, read_point, write_sweep

matplotlib.use("Agg")

# a 1x1 PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PARAMETERS = "seed = 0  # seed [>= 0]\neta = 0.1  # step size [> 0]\nsteps = 3  # steps [>= 0]"
TEXT = (
    "# Swept chapter\n\nThe loss ends at {glue:text}`loss:.3g` after {glue:text}`reach` steps; "
    "the dimension is {glue:text}`dim`.\n\n"
    "```{admonition} What we checked\n"
    "| claim | measured | criterion | held? |\n"
    "| --- | --- | --- | --- |\n"
    "| the loss decreases | final loss {glue:text}`loss:.2g` | $< 1$ | {glue:text}`loss-ok` |\n"
    "| an identity | exact | - | n/a |\n"
    "```"
)


def glue_output(name: str, value: object):
    return new_output(
        "display_data",
        data={"application/papermill.record/text/plain": repr(value)},
        metadata={"scrapbook": {"name": name, "mime_prefix": "application/papermill.record/"}},
    )


def make_sweep(root: Path, points: list[dict], values, page: bool = True) -> tuple:
    """A chapter, its run folders for ``points`` (glued ``values(params)``, a figure, a
    ``run.json`` saying worker ``tcp://published:1`` and 2.5 s) and the sweep's points."""
    (root / "chapters").mkdir(parents=True)
    figure = {"mystnb": {"figure": {"name": "fig-loss", "caption": "Loss of GD."}}}
    cells = [
        new_markdown_cell(TEXT),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell("glue(...)"),
        new_code_cell("plot()", metadata=figure),
    ]
    kernel = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(
        new_notebook(cells=cells, metadata={"kernelspec": kernel}),
        root / "chapters" / "01_swept.ipynb",
    )
    chapter = load_chapter(root / "chapters" / "01_swept.ipynb")
    plans = plan_points(chapter, [{**chapter.defaults, **p} for p in points], root / "runs", root)
    result = []
    for index, (over, plan) in enumerate(zip(points, plans, strict=True), start=1):
        nb = nbformat.read(chapter.path, as_version=4)
        nb.cells[2].outputs = [glue_output(k, v) for k, v in values(plan.parameters).items()]
        (plan.run_dir / "figures").mkdir(parents=True)
        nbformat.write(nb, plan.executed_notebook)
        (plan.run_dir / "figures" / "fig-loss.png").write_bytes(PNG)
        record = {"seconds": 2.5, "worker": "tcp://published:1", "key": plan.key}
        (plan.run_dir / "run.json").write_text(json.dumps(record))
        if page:
            (plan.run_dir / "html").mkdir()
            (plan.run_dir / "html" / "01_swept.html").write_text("<html></html>")
        # what this process saw: another worker and time (a concurrent identical sweep)
        seen = {"seconds": 1.0, "worker": "tcp://mine:2"}
        result.append(Point(index, over, plan, status="done", **seen))
    return chapter, result, sweep_folder(root / "sweeps", chapter, plans)


def values_of(params: dict) -> dict:
    loss = params["eta"] * (1 + 0.01 * params["seed"]) / 3
    return {
        "loss": loss,
        "reach": -1 if params["eta"] < 0.005 else 7,  # -1: not reached
        "dim": 8,  # the same at every point
        "never": -1,  # a placeholder at every point
        "loss-ok": "yes" if loss < 0.02 else "no",
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def test_a_one_point_sweep_gets_its_page(tmp_path):
    chapter, points, folder = make_sweep(tmp_path, [{}], values_of)
    write_sweep(folder, chapter, points, [])  # nothing swept: raised ValueError before
    page = (folder / "index.html").read_text()
    assert "swept: nothing (one point)" in page
    assert "No numeric glued value differs between the points." in page
    (row,) = read_csv(folder / "points.csv")
    assert row["status"] == "done" and float(row["loss"]) == pytest.approx(0.1 / 3)


def test_seconds_and_worker_come_from_the_published_run_folder(tmp_path):
    chapter, points, folder = make_sweep(tmp_path, [{"eta": 0.1}, {"eta": 0.2}], values_of)
    write_sweep(folder, chapter, points, ["eta"])
    rows = read_csv(folder / "points.csv")
    assert [(r["worker"], r["seconds"]) for r in rows] == [("tcp://published:1", "2.500")] * 2
    page = (folder / "index.html").read_text()
    assert "tcp://published:1" in page and "tcp://mine:2" not in page


def test_a_missing_page_is_rendered_on_the_client(tmp_path):
    chapter, points, folder = make_sweep(tmp_path, [{}], values_of, page=False)
    write_sweep(folder, chapter, points, [])
    page = points[0].plan.run_dir / "html" / "01_swept.html"
    assert page.is_file() and "Swept chapter" in page.read_text()
    assert (points[0].plan.run_dir / "parameters.json").is_file()


GRID = [{"eta": eta, "seed": seed} for eta in (1e-3, 1e-2, 1e-1) for seed in (0, 1)]


def test_the_page_shows_what_depends_on_the_swept_values(tmp_path):
    chapter, points, folder = make_sweep(tmp_path, GRID, values_of)
    write_sweep(folder, chapter, points, ["eta", "seed"])
    page = (folder / "index.html").read_text()
    # the verdicts per point, coloured; the literal n/a row too
    assert page.count('<td class="yes">yes</td>') == 4  # eta 1e-3 and 1e-2, both seeds
    assert page.count('<td class="no">no</td>') == 2
    assert page.count('<td class="na">n/a</td>') == 6
    assert "C1: the loss decreases" in page and "C2: an identity" in page
    # the chapter's figure at every point, labelled with the swept values
    tiles = re.findall(r"<figcaption>(eta=[^<]+)</figcaption>", page)
    assert tiles == [f"eta={e}, seed={s}" for e in ("0.001", "0.01", "0.1") for s in (0, 1)]
    # plots only of values that vary, titled by their description; dim is listed once
    plots = re.findall(r'<img alt="([^"]*)" title="([^"]*)" src="data:image/png', page)
    assert [title for _, title in plots] == ["loss", "reach"]
    assert plots[0][0] == "final loss"
    assert plots[1][0] == "The loss ends at … after [·] steps; the dimension is …"
    same = page[page.index('id="same"') : page.index('id="points"')]
    assert ">never</td><td>n/a</td>" in same
    assert ">dim<" in same and "steps; the dimension is [·]" in same and ">loss<" not in same
    # the table: 4 significant digits, sortable, the placeholder -1 left blank
    table = page[page.index('id="points-table"') :]
    assert 'data-v="0.0003333333333333333">0.0003333</td>' in table
    assert "<script>" in page and "localeCompare" in page
    rows = read_csv(folder / "points.csv")
    assert [r["reach"] for r in rows] == ["-1", "-1", "7", "7", "7", "7"]  # csv: as glued
    reach_cells = re.findall(r"<tr>(?:<td[^>]*>[^<]*</td>){4}.*?</tr>", table)
    assert reach_cells and not re.search(r">-1</td></tr>", table)
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', page)  # offline


def test_log_grids_get_log_axes_and_seeds_are_aggregated(tmp_path):
    import matplotlib.pyplot as plt

    assert _geometric([1e-3, 1e-2, 1e-1]) and _geometric([1, 2, 4, 8])
    assert not _geometric([1, 2, 3]) and not _geometric([0.1, 0.2]) and not _geometric([-1, 1])
    chapter, points, _ = make_sweep(tmp_path, GRID, values_of)
    results = [read_point(p) for p in points]
    fig, ax = plt.subplots()
    missing = _panel(ax, results, "loss", "eta", ["eta"], ())
    assert ax.get_xscale() == "log" and missing == 0
    (bars,) = ax.containers  # one line: the seeds are aggregated, not a second axis
    line = bars.lines[0]
    assert list(line.get_xdata()) == [1e-3, 1e-2, 1e-1]
    means = [e * (1 + 0.005) / 3 for e in (1e-3, 1e-2, 1e-1)]
    assert list(line.get_ydata()) == pytest.approx(means)
    ax.clear()
    assert _panel(ax, results, "reach", "eta", ["eta"], ()) == 2  # the -1 placeholders
    assert list(ax.containers[0].lines[0].get_xdata()) == [1e-2, 1e-1]
    plt.close(fig)


def test_a_failed_point_is_listed_with_its_log(tmp_path):
    chapter, points, folder = make_sweep(tmp_path, [{"eta": 0.1}, {"eta": 0.2}], values_of)
    log = tmp_path / "runs" / "failed" / "x.log"
    log.parent.mkdir()
    log.write_text("Traceback")
    points[1].status, points[1].error, points[1].log = "failed", "in cell [3]: ValueError", log
    write_sweep(folder, chapter, points, ["eta"])
    page = (folder / "index.html").read_text()
    assert 'class="failed"' in page and "../../runs/failed/x.log" in page
    rows = read_csv(folder / "points.csv")
    assert rows[1]["status"] == "failed" and rows[1]["worker"] == "tcp://mine:2"


@pytest.mark.slow
def test_a_sweep_where_nothing_varies_exits_0_with_its_page(tmp_path, capfd):
    """``dln-book sweep CHAPTER -p NAME=V``: one point, executed, then its page (the sweep
    crashed after executing it, exit 1)."""
    from dlnbook.cli import main
    from tests.conftest import one_chapter_book
    from tests.test_sweep import point_chapter, sweep_dir

    (tmp_path / "book").mkdir()
    book = one_chapter_book(tmp_path / "book", "01_point", point_chapter())
    dirs = ["--runs-dir", str(tmp_path / "runs"), "--sweeps-dir", str(tmp_path / "sweeps")]
    args = ["--book", str(book), "sweep", "1", "-p", "seed=3", "--workers", "1", *dirs]
    assert main(args) == 0
    folder = sweep_dir(capfd.readouterr().out)
    (row,) = read_csv(folder / "points.csv")
    assert row["status"] == "done" and row["worker"] == "local"
    page = (folder / "index.html").read_text()
    assert "swept: nothing (one point)" in page
    assert (folder / row["run"] / "html" / "01_point.html").resolve().is_file()


def test_a_sweep_of_seeds_only_aggregates_them(tmp_path):
    grid = [{"seed": seed} for seed in (0, 1, 2)]
    chapter, points, folder = make_sweep(tmp_path, grid, values_of)
    write_sweep(folder, chapter, points, ["seed"])
    page = (folder / "index.html").read_text()
    plots = re.findall(r'<img alt="[^"]*" title="([^"]*)" src="data:image/png', page)
    assert plots == ["loss"]  # one aggregated plot of the one value that varies
    assert "Seeds (seed) are aggregated in the plots." in page


def test_the_page_template_ships_as_package_data():
    """The sweep page's template is in the wheel: pyproject's package data covers it."""
    import fnmatch
    import tomllib

    package = Path(__file__).resolve().parents[1] / "dlnbook"
    pyproject = tomllib.loads((package.parent / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"].get("dlnbook", [])
    templates = [p.relative_to(package).as_posix() for p in (package / "templates").iterdir()]
    assert "templates/sweep.html" in templates
    assert all(any(fnmatch.fnmatch(t, g) for g in globs) for t in templates), (templates, globs)
