"""``dln-book sweep``: grids, bad input, the sweep folder, a real Dask cluster, a killed worker.

The cluster tests start a real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1
(free ports) and stop them at the end. Most points run a tiny chapter; the comparison of a
cluster with a sweep on this machine runs chapter 1 with its smoke values.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import numpy as np
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from dlnbook.chapters import ChapterError
from dlnbook.cli import main
from dlnbook.export import SHARED_DIR
from dlnbook.sweep import glued_values, grid, parse_axis
from tests.conftest import (
    BIN,
    REPO,
    SMALL_1,
    chapter_notebook,
    dask_cluster,
    free_port,
    one_chapter_book,
)

POINT_PARAMETERS = """\
seed = 0  # seed of the data [>= 0]
scale = 1.0  # factor of the data [> 0]
pause = 0.0  # seconds to wait before the results [>= 0]
label = 'a'  # a label
"""

POINT_CODE = """\
import time

import numpy as np
from myst_nb import glue

x = scale * np.random.default_rng(seed).standard_normal(5)
time.sleep(pause)
np.savez("results.npz", x=x)
glue("total", float(x.sum()), display=False)
glue("largest", int(np.argmax(x)), display=False)
glue("verdict", "yes" if x.sum() > 0 else "no", display=False)
"""


def point_chapter() -> nbformat.NotebookNode:
    """A quick chapter that glues two numbers and a word."""
    return chapter_notebook(
        "# Point chapter\n\nOne point of a sweep.", POINT_PARAMETERS, POINT_CODE
    )


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    return one_chapter_book(tmp_path_factory.mktemp("sweep-book"), "01_point", point_chapter())


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def sweep_dir(out: str) -> Path:
    (folder,) = re.findall(r"^Sweep folder: (.+)$", out, re.M)
    return Path(folder)


# --- grids -----------------------------------------------------------------------------


def test_parse_axis_lists_ranges_and_log_ranges():
    assert parse_axis("seed=1,2,3", 0) == ("seed", [1, 2, 3])
    assert parse_axis("widths=[3, 2, 3],[3,4,3]", [3, 3]) == ("widths", [[3, 2, 3], [3, 4, 3]])
    assert parse_axis("widths=[3, 2, 3]", [3, 3]) == ("widths", [[3, 2, 3]])
    assert parse_axis("label='a','b, c'", "x") == ("label", ["a", "b, c"])
    assert parse_axis("eta=0.1:0.3:3", 0.5)[1] == pytest.approx([0.1, 0.2, 0.3])
    assert parse_axis("steps=100:10000:3:log", 5) == ("steps", [100, 1000, 10000])
    assert parse_axis("steps=0:10:3", 5) == ("steps", [0, 5, 10])
    assert parse_axis("steps=0:10:4", 5)[1] == pytest.approx([0, 10 / 3, 20 / 3, 10])
    assert parse_axis("eta=1e-3:1e-1:3:log", 0.5)[1] == pytest.approx([1e-3, 1e-2, 1e-1])
    for bad, message in [
        ("seed", "expected NAME=V1,V2"),
        ("seed=", "no values for 'seed'"),
        ("seed=1:5:0", "is empty"),
        ("eta=0:1:3:log", "needs positive ends"),
    ]:
        with pytest.raises(ChapterError, match=message):
            parse_axis(bad, 0)


def test_grid_is_the_product_for_every_explicit_point_without_duplicates():
    points = grid({"a": [1, 2], "b": ["x", "y"]})
    assert points == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    assert grid({"a": [1, 1, 2]}) == [{"a": 1}, {"a": 2}]
    assert grid({"b": [5]}, [{"a": 1}, {"a": 2}]) == [{"a": 1, "b": 5}, {"a": 2, "b": 5}]


def test_glued_values_reads_scalars_exactly(tmp_path):
    def glued(name, text):
        return nbformat.v4.new_output(
            "display_data",
            data={"application/papermill.record/text/plain": text},
            metadata={"scrapbook": {"name": name, "mime_prefix": "application/papermill.record/"}},
        )

    cell = new_code_cell("")
    cell.outputs = [
        glued("x", "0.1234567890123456789"),
        glued("y", "np.float64(2.5e-17)"),
        glued("n", "np.int64(7)"),
        glued("w", "'yes'"),
        glued("arr", "array([1, 2])"),
    ]
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=[cell]), path)
    assert glued_values(path) == {"x": 0.1234567890123456789, "y": 2.5e-17, "n": 7, "w": "yes"}


# --- bad input: exit 2, one line, nothing written --------------------------------------

BAD_SWEEPS = [
    (["-p", "seed=1,2,-3"], r"parameter 'seed' of chapter '01_point' must be >= 0, got -3"),
    (["-p", "seed=1,2", "-p", "sead=1,2"], r"chapter '01_point' has no parameter 'sead'"),
    (["-p", "scale=1,0.5,zero"], r"'scale' .* expects a number, got 'zero'"),
    (["-p", "seed="], r"no values for 'seed'"),
    (["-p", "seed=3:9:0"], r"the range '3:9:0' of 'seed' is empty"),
    ([], r"nothing to sweep"),
    (["-p", "seed=0:100:101", "-p", "pause=0:1:100"], r"the grid has 10100 points .* --yes"),
]


@pytest.mark.parametrize(("args", "message"), BAD_SWEEPS)
def test_bad_sweep_input_exits_2_with_one_line_and_writes_nothing(
    book, tmp_path, capfd, args, message
):
    runs, sweeps = tmp_path / "runs", tmp_path / "sweeps"
    dirs = ["--runs-dir", str(runs), "--sweeps-dir", str(sweeps)]
    assert main(["--book", str(book), "sweep", "1", *args, *dirs]) == 2
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1, captured
    assert lines[0].startswith("dln-book: error: ") and re.search(message, lines[0]), lines[0]
    assert not runs.exists() and not sweeps.exists()


def test_bad_sweep_file_exits_2(book, tmp_path, capfd):
    runs = tmp_path / "runs"
    for text, message in [
        ("points: []\n", "the list of points is empty"),
        ("points: [{seed: -1}]\n", "must be >= 0, got -1"),
        ("- 1\n- 2\n", "expected NAME: \\[values\\] entries"),
        ("seed: [1, 2\n", "is not valid YAML"),
    ]:
        params = tmp_path / "p.yml"
        params.write_text(text)
        args = ["--book", str(book), "sweep", "1", "--params", str(params), "--runs-dir", str(runs)]
        assert main(args) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), err
    assert not runs.exists() and not (book / "sweeps").exists()


@pytest.mark.waits
def test_unreachable_scheduler_is_a_clear_error_within_10_s(book, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    proc = subprocess.run(
        [BIN / "dln-book", "--book", book, "sweep", "1", "-p", "seed=1,2"]
        + ["--scheduler", address, "--runs-dir", tmp_path / "runs"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - start < 10
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"dln-book: error: cannot reach the Dask scheduler at {address} within 4 s"
    )
    assert not (tmp_path / "runs").exists() and not (book / "sweeps").exists()


# --- a sweep on this machine -----------------------------------------------------------


def test_local_sweep_writes_runs_points_csv_and_page_and_reuses_runs(book, tmp_path, capfd):
    runs, sweeps = tmp_path / "runs", tmp_path / "sweeps"
    dirs = ["--runs-dir", str(runs), "--sweeps-dir", str(sweeps)]
    args = [
        "--book",
        str(book),
        "sweep",
        "point",
        "-p",
        "seed=1,2",
        "scale=0.5,2",
        "--workers",
        "2",
    ]
    assert main([*args, *dirs]) == 0
    out = capfd.readouterr()
    folder = sweep_dir(out.out)
    assert re.search(r"sweep: 4/4 done, 0 running, 0 failed, ETA 00:00", out.err)
    assert folder.parent == sweeps.resolve() and re.fullmatch(r"01_point-[0-9a-f]{12}", folder.name)
    rows = read_csv(folder / "points.csv")
    assert [(r["seed"], r["scale"]) for r in rows] == [
        ("1", "0.5"),
        ("1", "2.0"),
        ("2", "0.5"),
        ("2", "2.0"),
    ]
    assert list(rows[0])[:8] == [
        "point",
        "seed",
        "scale",
        "status",
        "seconds",
        "worker",
        "run",
        "error",
    ]
    assert {r["status"] for r in rows} == {"done"}
    for row in rows:
        run_dir = (folder / row["run"]).resolve()
        assert run_dir.parent == runs.resolve()
        x = np.load(run_dir / "results.npz")["x"]
        assert float(row["total"]) == float(x.sum())  # bit for bit
        assert row["verdict"] == ("yes" if x.sum() > 0 else "no")
        assert json.loads((run_dir / "parameters.json").read_text())["seed"] == int(row["seed"])
        assert (run_dir / "html" / "01_point.html").is_file() and row["worker"] == "local"
    page = (folder / "index.html").read_text()
    varying = [g for g in ("total", "largest") if len({r[g] for r in rows}) > 1]
    assert page.count("data:image/png;base64,") == len(varying)  # numeric values that vary
    assert 'alt="total"' in page and 'alt="verdict"' not in page
    for row in rows:
        assert f'href="{row["run"]}/html/01_point.html"' in page
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', page)  # offline
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]
    # the same sweep again reuses every point; `run` reuses a sweep's point
    assert main([*args, *dirs]) == 0
    out = capfd.readouterr()
    assert "4/4 done (4 reused)" in out.err and sweep_dir(out.out) == folder
    assert [r["status"] for r in read_csv(folder / "points.csv")] == ["reused"] * 4
    assert main(["--book", str(book), "run", "1", "-p", "seed=2", "scale=2", *dirs[:2]]) == 0
    assert "01_point: up to date" in capfd.readouterr().out


def test_failing_point_is_recorded_and_the_others_go_on(tmp_path, capfd):
    book = tmp_path / "book"
    (book / "chapters").mkdir(parents=True)
    nb = point_chapter()
    nb.cells[2].source += "if label == 'b':\n    raise ValueError(f'label {label} is bad')\n"
    nbformat.write(nb, book / "chapters" / "02_broken.ipynb")
    runs = tmp_path / "runs"
    args = ["--book", str(book), "sweep", "2", "-p", "label='a','b'", "--workers", "1"]
    assert main([*args, "--runs-dir", str(runs), "--sweeps-dir", str(tmp_path / "sweeps")]) == 1
    out = capfd.readouterr()
    rows = read_csv(sweep_dir(out.out) / "points.csv")
    assert [r["status"] for r in rows] == ["done", "failed"]
    assert re.fullmatch(r"in cell \[\d+\]: ValueError: label b is bad", rows[1]["error"])
    assert rows[1]["total"] == "" and rows[0]["total"] != ""
    (line,) = [x for x in out.out.splitlines() if x.startswith("point 2 failed")]
    partial, log = re.findall(r"partial notebook (\S+)\); traceback in (\S+)$", line)[0]
    assert Path(partial).is_file() and "ValueError" in Path(log).read_text()
    assert rows[1]["run"] == os.path.relpath(log, sweep_dir(out.out))
    names = sorted(p.name for p in runs.iterdir() if p.name != SHARED_DIR)
    assert len(names) == 2 and names[1] == "failed" and names[0].startswith("02_broken-")


# --- a real cluster --------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_on_a_cluster_matches_a_local_sweep_bit_for_bit(tmp_path, capfd, chapter1_run):
    """Chapter 1 swept on a two-worker cluster against the same point swept on this machine
    (``chapter1_run``: run, then swept, once per session)."""
    local = chapter1_run.parent.parent  # runs/ and sweeps/ as below
    params = [f"-p{name}={value!r}" for name, value in SMALL_1.items()]
    a = tmp_path / "a"
    with dask_cluster() as (address, _):
        dirs = ["--runs-dir", str(a / "runs"), "--sweeps-dir", str(a / "sweeps")]
        assert (
            main(["--book", str(REPO), "sweep", "1", *params, "--scheduler", address, *dirs]) == 0
        )
        cluster = sweep_dir(capfd.readouterr().out)
    (folder,) = (local / "sweeps").iterdir()
    assert cluster.name == folder.name
    rows = {"cluster": read_csv(cluster / "points.csv"), "local": read_csv(folder / "points.csv")}
    assert [r["status"] for r in rows["cluster"]] == ["done"]
    assert [r["status"] for r in rows["local"]] == ["reused"]  # the run of chapter1_run
    assert all(r["worker"].startswith("tcp://127.0.0.1:") for r in rows["cluster"])
    for r in (*rows["cluster"], *rows["local"]):
        del r["seconds"], r["worker"], r["status"]
    assert rows["cluster"] == rows["local"]  # parameters, run folders, glued values (repr)
    assert len(rows["local"][0]) > 8 + 10  # chapter 1 glues more than ten scalars
    runs = {
        k: sorted(p.name for p in (root / "runs").iterdir() if p.name != SHARED_DIR)
        for k, root in (("a", a), ("local", local))
    }
    assert runs["a"] == runs["local"] == [chapter1_run.name]
    files = {
        k: sorted(
            p.relative_to(root / "runs" / chapter1_run.name)
            for p in (root / "runs" / chapter1_run.name).rglob("*")
        )
        for k, root in (("a", a), ("local", local))
    }
    assert files["a"] == files["local"]
    for npz in chapter1_run.rglob("*.npz"):
        other = a / "runs" / chapter1_run.name / npz.relative_to(chapter1_run)
        with np.load(npz) as x, np.load(other) as y:
            assert x.files == y.files
            for key in x.files:
                if x[key].dtype.kind in "fiucb":  # numbers; text holds timings
                    np.testing.assert_array_equal(x[key], y[key], strict=True)


def kernel_of(worker: subprocess.Popen) -> psutil.Process | None:
    try:
        children = psutil.Process(worker.pid).children()
    except psutil.NoSuchProcess:
        return None
    return next((c for c in children if "ipykernel" in " ".join(c.cmdline())), None)


@pytest.mark.waits
@pytest.mark.slow
def test_a_worker_killed_mid_point_loses_nothing(book, tmp_path):
    runs, sweeps = tmp_path / "runs", tmp_path / "sweeps"
    with dask_cluster() as (address, workers):
        proc = subprocess.Popen(
            [BIN / "dln-book", "--book", book, "sweep", "1", "-p", "seed=11,12,13,14"]
            + ["-p", "pause=3", "--scheduler", address, "--runs-dir", runs, "--sweeps-dir", sweeps],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 120
        victim = kernel = None
        while kernel is None and time.monotonic() < deadline and proc.poll() is None:
            for worker in workers:
                kernel = kernel_of(worker)
                if kernel is not None:
                    victim = worker
                    break
            time.sleep(0.2)
        assert victim is not None, "no worker started a point"
        victim.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    psutil.wait_procs([kernel], timeout=10)  # the kernel follows its worker
    assert not kernel.is_running()
    rows = read_csv(sweep_dir(out) / "points.csv")
    assert [r["status"] for r in rows] == ["done"] * 4
    names = sorted(p.name for p in runs.iterdir() if p.name != SHARED_DIR)
    assert len(names) == 4 and all(re.fullmatch(r"01_point-[0-9a-f]{12}", n) for n in names)
    for name in names:
        assert {"01_point.ipynb", "html", "run.json", "results.npz"} <= {
            p.name for p in (runs / name).iterdir()
        }


@pytest.mark.waits
@pytest.mark.slow
def test_a_long_chapter_does_not_hold_the_others_behind_it(tmp_path):
    """Six chapters on two local workers, the third slow: the quick ones after it finish on
    the free worker while it runs (Dask would otherwise assign them at submission, behind it
    or beside it, as a cold book build with chapter 7 showed). The slow one lasts until the five
    quick ones are published, or 60 s if they wait behind it (then it does not end last)."""
    from dlnbook.chapters import load_chapter
    from dlnbook.runner import plan_runs, run_plans

    (tmp_path / "chapters").mkdir()
    runs = tmp_path / "runs"
    slow = (  # until five runs are published (a folder appears whole when its run is done)
        "import time\nfrom pathlib import Path\nend = time.monotonic() + 60\n"
        f"while len(list(Path({str(runs)!r}).glob('0*'))) < 5 and time.monotonic() < end:\n"
        "    time.sleep(0.1)"
    )
    chapters = []
    for i in range(1, 7):
        nb = chapter_notebook("# Point", POINT_PARAMETERS, slow if i == 3 else "x = 1")
        path = tmp_path / "chapters" / f"0{i}_point.ipynb"
        nbformat.write(nb, path)
        chapters.append(load_chapter(path))
    outcomes = run_plans(plan_runs(chapters, {}, runs), jobs=2, log=lambda m: None)
    assert [o.error for o in outcomes] == [None] * 6
    assert outcomes[-1].plan.chapter.name == "03_point"  # the slow one, last
