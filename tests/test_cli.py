"""The ``dln-book`` command line: list, run, build, and every kind of bad input.

Most tests use a tiny fixture chapter (a few seconds per papermill run); one runs a real
chapter with its smoke values and one builds a mini book (both marked slow).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell

from dlnbook.chapters import discover_chapters, load_chapter, validate
from dlnbook.checks import parse_range
from dlnbook.cli import UsageError, main, resolve_chapter
from tests.conftest import REPO, chapter_notebook

TINY_PARAMETERS = """\
seed = 0  # random seed of the data [>= 0]
steps = 30  # gradient descent iterations [>= 0]
eta = 0.1  # constant step size [> 0]
depth = 2  # number of layers N [>= 1]
widths = [3, 2, 3]  # widths d_0, ..., d_N [chain]
label = 'tiny'  # label of the curve
fail = False  # raise an error after the first figure (for tests)
"""

TINY_CODE = """\
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

from dlncore.plotting import save_figure

rng = np.random.default_rng(seed)
weights = [rng.standard_normal((b, a)) / 2 for a, b in zip(widths[:-1], widths[1:])]
target = rng.standard_normal((widths[-1], widths[0]))


def product(factors, size):
    out = np.eye(size)
    for w in factors:
        out = w @ out
    return out


losses = []
for _ in tqdm(range(steps), desc="tiny gd", mininterval=0):
    residual = product(weights, widths[0]) - target
    losses.append(0.5 * float(np.sum(residual**2)))
    grads = [
        product(weights[j + 1 :], widths[j + 1]).T @ residual @ product(weights[:j], widths[0]).T
        for j in range(len(weights))
    ]
    weights = [w - eta * g for w, g in zip(weights, grads)]
np.savez("results.npz", losses=np.array(losses))
"""

TINY_FIGURE = """\
fig, ax = plt.subplots()
ax.plot(losses, label=label)
paths = save_figure(fig, "fig-tiny-loss")
"""


def tiny_chapter(title: str = "Tiny chapter") -> nbformat.NotebookNode:
    """A fast chapter that follows the conventions of chapters/README.md."""
    figure = {"mystnb": {"figure": {"name": "fig-tiny-loss", "caption": "Loss of the tiny run."}}}
    return chapter_notebook(
        f"# {title}\n\nA tiny chapter for the tests, $L(W) \\ge 0$.",
        TINY_PARAMETERS,
        TINY_CODE,
        new_code_cell(TINY_FIGURE, metadata=figure),
        "if fail:\n"
        "    import os\n\n"
        "    os.write(2, b'noise of the kernel process')  # not a cell output: its own stderr\n"
        "    raise RuntimeError('tiny chapter failed on purpose')",
        new_markdown_cell("{numref}`fig-tiny-loss` shows the loss."),
    )


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    """A book folder with two chapters: ``01_tiny`` and ``02_other`` (same code)."""
    root = tmp_path_factory.mktemp("cli-book")
    (root / "chapters").mkdir()
    nbformat.write(tiny_chapter(), root / "chapters" / "01_tiny.ipynb")
    nbformat.write(tiny_chapter("Other chapter"), root / "chapters" / "02_other.ipynb")
    return root


def dln(book: Path, *args: str) -> int:
    return main(["--book", str(book), *args])


# --- list ------------------------------------------------------------------------------


def test_list_shows_parameters_types_defaults_ranges_and_meanings(book, capfd):
    assert dln(book, "list") == 0
    out = capfd.readouterr().out
    assert "01_tiny: Tiny chapter" in out and "02_other: Other chapter" in out
    assert re.search(r"^  seed\s+int\s+0\s+>= 0\s+random seed of the data$", out, re.M)
    assert re.search(r"^  steps\s+int\s+30\s+>= 0\s+gradient descent iterations$", out, re.M)
    assert re.search(r"eta\s+float\s+0\.1\s+> 0\s+constant step size$", out, re.M)
    assert re.search(r"depth\s+int\s+2\s+>= 1\s+number of layers N$", out, re.M)
    assert re.search(r"widths\s+list\[int\]\s+\[3, 2, 3\]\s+chain\s+widths d_0", out, re.M)
    assert re.search(r"label\s+str\s+'tiny'\s+any\s+label of the curve$", out, re.M)
    assert "[>= 0]" not in out  # the range is a column, not part of the meaning


def test_list_covers_every_parameter_of_the_repository_chapters(capfd):
    assert dln(REPO, "list") == 0
    out = capfd.readouterr().out
    for chapter in discover_chapters(REPO / "chapters"):
        assert re.search(rf"^{chapter.name}\b", out, re.M), chapter.name
        for param in chapter.parameters:
            assert re.search(
                rf"^  {param.name}\s+\S+\s+{re.escape(repr(param.default))}", out, re.M
            )


def test_console_script_is_installed(book):
    exe = Path(sys.executable).with_name("dln-book")
    proc = subprocess.run(
        [str(exe), "--book", str(book), "list"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "01_tiny" in proc.stdout


# --- chapter names and ranges ----------------------------------------------------------


def test_resolve_chapter_by_number_name_or_stem(book):
    chapters = discover_chapters(book / "chapters")
    for text in ("01_tiny", "1", "01", "tiny", "chapters/01_tiny.ipynb"):
        assert resolve_chapter(chapters, text).name == "01_tiny"
    with pytest.raises(UsageError, match=r"unknown chapter '9' \(chapters: 01_tiny, 02_other\)"):
        resolve_chapter(chapters, "9")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("steps = 5  # iterations", None),  # no name-based rules: brackets only
        ("eta = 0.1  # step size", None),
        ("dims = [3, 3]  # widths", None),
        ("noise = 0.1  # noise level [>= 0, <= 1]", "0..1"),
        ("steps = 5  # iterations [>= 1]", ">= 1"),
        ("depths = [1, 2]  # depths [1..20, len 1..5]", "1..20, len 1..5"),
        ("dims = [3, 3]  # widths [chain, < 1e3]", "chain, < 1000"),
        ("init = 'a'  # start ['a' | 'b']", "'a' | 'b'"),
        ("hidden = [2]  # hidden widths [d_1, ..., d_N-1]", None),
    ],
)
def test_parameter_range_from_comment_brackets(line, expected):
    from dlnbook.chapters import parse_parameters_source

    (param,) = parse_parameters_source(line)
    assert (str(param.range) if param.range else None) == expected


def test_unreadable_range_annotation_is_an_error():
    from dlnbook.chapters import ChapterError

    with pytest.raises(ChapterError, match="cannot read range item '=> 0'"):
        parse_range("noise level [=> 0]")
    with pytest.raises(ChapterError, match="cannot read range item 'positive'"):
        parse_range("noise level [> 0, positive]")


def test_chain_is_checked_against_depth_and_data_widths(tmp_path):
    from dlnbook.chapters import ChapterError

    nb = tiny_chapter()
    nb.cells[1].source += "d_x = 3  # input dimension\n"
    nbformat.write(nb, tmp_path / "c.ipynb")
    chapter = load_chapter(tmp_path / "c.ipynb")
    validate(chapter, {"widths": [3, 5, 3]})
    validate(chapter, {"widths": [3, 5, 5, 3], "depth": 3})
    with pytest.raises(ChapterError, match="must start with d_x = 3"):
        validate(chapter, {"widths": [4, 2, 3]})
    with pytest.raises(ChapterError, match="needs every width >= 1"):
        validate(chapter, {"widths": [3, 0, 3]})


# --- bad input: exit 2, one message, nothing written -----------------------------------

BAD_RUNS = [
    (["9"], r"unknown chapter '9' \(chapters: 01_tiny, 02_other\)"),
    (["nothing"], r"unknown chapter 'nothing'"),
    (
        ["1", "-p", "stepz=5"],
        r"chapter '01_tiny' has no parameter 'stepz' \(known: seed, steps, eta, depth, widths, "
        r"label, fail\)",
    ),
    (["1", "-p", "steps=2.5"], r"parameter 'steps' of chapter '01_tiny' expects an int, got 2.5"),
    (["1", "-p", "steps=many"], r"'steps' .* expects an int, got 'many'"),
    (["1", "-p", "fail=1"], r"'fail' .* expects a bool, got 1"),
    (["1", "-p", "widths=3"], r"'widths' .* expects a list, got 3"),
    (["1", "-p", "steps=-5"], r"parameter 'steps' of chapter '01_tiny' must be >= 0, got -5"),
    (["1", "-p", "eta=0"], r"parameter 'eta' of chapter '01_tiny' must be > 0, got 0.0"),
    (["1", "-p", "eta=-1e-3"], r"'eta' .* must be > 0, got -0.001"),
    (["1", "-p", "depth=0", "widths=[3]"], r"'depth' .* must be >= 1, got 0"),
    (["1", "-p", "seed=-1"], r"'seed' .* must be >= 0, got -1"),
    (["1", "-p", "widths=[3, 2, 2, 3]"], r"needs depth \+ 1 = 3 widths for depth 2.*chain"),
    (["1", "-p", "widths=[3, 2.5, 3]"], r"'widths' .* expects a flat list of ints"),
    (["1", "-p", "steps"], r"expected NAME=VALUE, got 'steps'"),
    (["1", "-p", "=5"], r"expected NAME=VALUE, got '=5'"),
    (["1", "-p", "2x=5"], r"expected NAME=VALUE, got '2x=5'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_RUNS)
def test_bad_run_input_exits_2_with_one_message_and_writes_nothing(
    book, tmp_path, capfd, args, message
):
    runs = tmp_path / "runs"
    assert dln(book, "run", *args, "--runs-dir", str(runs)) == 2
    captured = capfd.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dln-book: error: "), captured.err
    assert re.search(message, lines[0]), lines[0]
    assert not runs.exists()


def test_default_runs_folder_untouched_on_bad_input(book, capfd):
    assert dln(book, "run", "1", "-p", "steps=-1") == 2
    assert not (book / "runs").exists()


def test_missing_chapters_folder_is_a_usage_error(tmp_path, capfd):
    assert main(["--book", str(tmp_path), "list"]) == 2
    assert "no chapters folder" in capfd.readouterr().err


def test_argparse_errors_exit_2(book, capfd):
    with pytest.raises(SystemExit) as exc:
        main(["--book", str(book), "run"])
    assert exc.value.code == 2


# --- run -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(book, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def run_ok(book: Path, runs: Path, capfd, *args: str) -> tuple[Path, str]:
    """Run a chapter, return its run folder (from the output) and stdout + stderr."""
    assert dln(book, "run", *args, "--runs-dir", str(runs)) == 0
    captured = capfd.readouterr()
    out = captured.out + captured.err
    (folder,) = re.findall(r"^Run folder: (.+)$", out, re.M)
    return Path(folder), out


def test_run_writes_notebook_html_figures_parameters_and_results(book, runs, capfd):
    run_dir, out = run_ok(book, runs, capfd, "tiny")
    assert run_dir.parent == runs.resolve() and re.fullmatch(r"01_tiny-[0-9a-f]{12}", run_dir.name)
    assert "01_tiny: started" in out and re.search(r"01_tiny: done in .* \[1/1\]", out)
    assert re.search(r"tiny gd: +\d+%", out)  # the chapter's own progress bar, live
    names = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")}
    expected = {"01_tiny.ipynb", "html/01_tiny.html", "parameters.json", "run.json"}
    expected |= {"results.npz", "figures/fig-tiny-loss.png", "figures/fig-tiny-loss.svg"}
    assert expected <= names
    assert re.search(r"^  page +html/01_tiny.html$", out, re.M)
    assert (
        json.loads((run_dir / "parameters.json").read_text())
        == load_chapter(book / "chapters" / "01_tiny.ipynb").defaults
    )
    html = (run_dir / "html" / "01_tiny.html").read_text()  # details: tests/test_export.py
    assert "Tiny chapter" in html and "Parameters of this run" in html
    assert 'Fig. 1 </span><span class="caption-text">Loss of the tiny run.' in html


def test_run_with_a_changed_parameter_records_it_and_changes_the_data(book, runs, capfd):
    default_dir, _ = run_ok(book, runs, capfd, "01_tiny")
    changed_dir, out = run_ok(book, runs, capfd, "1", "-p", "seed=3", "-p", "steps=40")
    assert "01_tiny with seed=3, steps=40" in out
    assert changed_dir != default_dir
    params = json.loads((changed_dir / "parameters.json").read_text())
    assert params["seed"] == 3 and params["steps"] == 40 and params["eta"] == 0.1
    assert json.loads((changed_dir / "run.json").read_text())["parameters"] == params
    default_losses = np.load(default_dir / "results.npz")["losses"]
    changed_losses = np.load(changed_dir / "results.npz")["losses"]
    assert default_losses.shape == (30,) and changed_losses.shape == (40,)
    assert not np.allclose(default_losses, changed_losses[:30])
    assert (default_dir / "figures" / "fig-tiny-loss.svg").read_bytes() != (
        changed_dir / "figures" / "fig-tiny-loss.svg"
    ).read_bytes()


def test_same_parameters_reuse_the_folder_unless_force(book, runs, capfd):
    first, _ = run_ok(book, runs, capfd, "1", "-p", "seed=5")
    record = (first / "run.json").read_text()
    again, out = run_ok(book, runs, capfd, "01_tiny", "-p", "seed=5", "steps=30")
    assert again == first and "up to date" in out and "started" not in out
    assert (first / "run.json").read_text() == record
    forced, out = run_ok(book, runs, capfd, "1", "-p", "seed=5", "--force")
    assert forced == first and "01_tiny: started" in out
    assert (
        json.loads((first / "run.json").read_text())["finished"] >= json.loads(record)["finished"]
    )
    assert (first / "html" / "01_tiny.html").is_file()
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]  # nothing set aside


def test_failing_chapter_exits_1_with_error_and_partial_notebook(book, tmp_path, capfd):
    runs = tmp_path / "runs"
    assert dln(book, "run", "1", "-p", "fail=True", "--runs-dir", str(runs)) == 1
    err = capfd.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("dln-book:")]
    assert re.match(r"dln-book: chapter 01_tiny failed in cell \[\d+\]: RuntimeError: ", line)
    assert "tiny chapter failed on purpose" in line and "Traceback" not in err
    (partial, log) = re.findall(r"partial notebook (\S+);.* traceback in (\S+)\)$", line)[0]
    assert Path(partial).name == Path(log).with_suffix(".ipynb").name  # named after the run
    assert re.fullmatch(r"01_tiny-[0-9a-f]{12}\.ipynb", Path(partial).name)
    assert "tiny chapter failed on purpose" in Path(log).read_text()
    # the kernel process's own output is in the log, not on the terminal
    assert "noise of the kernel process" in Path(log).read_text()
    assert "noise of the kernel process" not in err
    executed = nbformat.read(partial, as_version=4)
    assert any(
        out.get("ename") == "RuntimeError" for c in executed.cells for out in c.get("outputs", [])
    )
    assert [p.name for p in runs.iterdir()] == ["failed"]  # no run folder


def broken_finalize(directory: Path, notebook: Path) -> None:
    """Stands in for the HTML export in the worker process, and fails."""
    raise RuntimeError("export broke")


def test_failed_forced_rerun_keeps_the_previous_run(book, runs, capfd, monkeypatch):
    first, _ = run_ok(book, runs, capfd, "1", "-p", "seed=7")
    monkeypatch.setattr("dlnbook.cli.finalize_run", broken_finalize)
    assert dln(book, "run", "1", "-p", "seed=7", "--force", "--runs-dir", str(runs)) == 1
    assert "RuntimeError: export broke" in capfd.readouterr().err
    assert (first / "run.json").is_file() and (first / "html" / "01_tiny.html").is_file()
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]


# --- a real chapter --------------------------------------------------------------------


@pytest.mark.slow
def test_run_a_real_chapter(chapter1_run):
    """``dln-book run 1 -p steps=30 -p bottleneck_steps=30`` (run once per session for the
    tests that read it: ``chapter1_run`` in ``tests/conftest.py``)."""
    name = "01_setting"
    assert re.fullmatch(rf"{name}-[0-9a-f]{{12}}", chapter1_run.name)
    params = json.loads((chapter1_run / "parameters.json").read_text())
    assert (params["steps"], params["bottleneck_steps"]) == (30, 30)
    assert params == {**load_chapter(REPO / "chapters" / f"{name}.ipynb").defaults, **params}
    nb = json.loads((REPO / "chapters" / f"{name}.ipynb").read_text())
    figures = [
        c["metadata"]["mystnb"]["figure"]["name"]
        for c in nb["cells"]
        if c.get("metadata", {}).get("mystnb", {}).get("figure")
    ]
    assert figures
    for fig in figures:
        for ext in ("png", "svg"):
            assert (chapter1_run / "figures" / f"{fig}.{ext}").stat().st_size > 0
    assert (chapter1_run / "html" / f"{name}.html").stat().st_size > 0
    assert not (REPO / "runs" / chapter1_run.name).exists()


# --- build -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"09_missing": {"steps": 1}}, r"names unknown chapter\(s\) 09_missing"),
        ({"01_tiny": {"stepz": 1}}, r"chapter '01_tiny' has no parameter 'stepz' \(known: seed"),
        ({"02_other": {"eta": -0.5}}, r"'eta' of chapter '02_other' must be > 0, got -0.5"),
        ({"01_tiny": {"steps": "x"}}, r"'steps' .* expects an int"),
        ([1, 2], r"expected a mapping chapter -> parameters"),
    ],
)
def test_bad_build_profile_exits_2_and_writes_nothing(book, tmp_path, capfd, profile, message):
    params = tmp_path / "p.yml"
    params.write_text(yaml.safe_dump(profile))
    out = tmp_path / "out"
    assert dln(book, "build", "--params", str(params), "--out", str(out)) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not out.exists() and not (book / "_build").exists()


def test_missing_or_invalid_profile_file_exits_2(book, tmp_path, capfd):
    assert dln(book, "build", "--params", str(tmp_path / "none.yml")) == 2
    assert "cannot read parameter profile" in capfd.readouterr().err
    (tmp_path / "bad.yml").write_text("01_tiny: [unclosed\n")
    assert dln(book, "build", "--params", str(tmp_path / "bad.yml")) == 2
    assert "is not valid YAML" in capfd.readouterr().err
    assert not (book / "_build").exists()


def test_build_refuses_the_default_output_folder(book, tmp_path, capfd):
    params = tmp_path / "p.yml"
    params.write_text("01_tiny:\n  steps: 3\n")
    assert dln(book, "build", "--params", str(params), "--out", str(book)) == 2
    assert "would overwrite the default book" in capfd.readouterr().err


@pytest.mark.slow
def test_build_with_params_into_its_own_folder(tmp_path, capfd):
    from tests.book.conftest import make_mini_book

    root = make_mini_book(tmp_path / "book", {"01_tiny": tiny_chapter()})
    params = tmp_path / "fast.yml"
    params.write_text("01_tiny:\n  steps: 7\n")
    assert dln(root, "build", "--params", str(params), "--jobs", "1") == 0
    out = capfd.readouterr().out
    (index,) = re.findall(r"^Book built with .*: file://(.+)$", out, re.M)
    assert "01_tiny: started" in out
    html_dir = Path(index).parent
    assert html_dir.parent.parent.parent == root / "_build"
    assert re.fullmatch(r"params-fast-[0-9a-f]{8}", html_dir.parent.parent.name)
    page = (html_dir / "chapters" / "01_tiny.html").read_text()
    assert "Parameters of this run" in page
    assert re.search(r'<span class="pre">7</span></code> \(default', page), "box not updated"
    assert not (root / "_build" / "html").exists() and not (root / "runs").exists()
    # same file again: reused, nothing executed
    assert dln(root, "build", "--params", str(params)) == 0
    assert "01_tiny: up to date" in capfd.readouterr().out


# --- --dry-run and the order of execution ----------------------------------------------


def test_dry_run_of_run_validates_prints_and_writes_nothing(book, tmp_path, capfd):
    runs = tmp_path / "runs"
    assert dln(book, "run", "1", "-p", "seed=21", "--dry-run", "--runs-dir", str(runs)) == 0
    out = capfd.readouterr().out.splitlines()
    assert re.fullmatch(r"01_tiny +seed=21 +would execute( +time unknown)?", out[0]), out
    assert out[-1] == "1 chapter(s): 0 cached, 1 to run (1 without an estimate)"
    assert not runs.exists()
    assert dln(book, "run", "1", "-p", "seed=-1", "--dry-run", "--runs-dir", str(runs)) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be >= 0, got -1" in err[0] and not runs.exists()


def test_dry_run_knows_cached_runs_and_recorded_durations(book, runs, capfd):
    run_dir, _ = run_ok(book, runs, capfd, "1", "-p", "seed=22")
    assert dln(book, "run", "1", "-p", "seed=22", "--dry-run", "--runs-dir", str(runs)) == 0
    out = capfd.readouterr().out.splitlines()
    assert re.fullmatch(r"01_tiny +seed=22 +cached", out[0]) and out[-1].endswith(
        "1 cached, 0 to run"
    )
    listing = sorted(p.name for p in runs.iterdir())
    assert dln(book, "sweep", "1", "-p", "seed=22,23", "--dry-run", "--runs-dir", str(runs)) == 0
    out = capfd.readouterr().out.splitlines()
    assert re.fullmatch(r"01_tiny +seed=22 +cached", out[0]), out
    assert re.fullmatch(r"01_tiny +seed=23 +would execute +about \d+ s", out[1]), out  # recorded
    assert re.fullmatch(r"2 point\(s\): 1 cached, 1 to run, about \d+ s on \d+ worker\(s\)", out[2])
    assert sorted(p.name for p in runs.iterdir()) == listing and not (book / "sweeps").exists()


def test_dry_run_of_build_lists_every_chapter(book, tmp_path, capfd):
    params = tmp_path / "p.yml"
    params.write_text("01_tiny:\n  steps: 7\n")
    out_dir = tmp_path / "out"
    assert dln(book, "build", "--params", str(params), "--out", str(out_dir), "--dry-run") == 0
    out = capfd.readouterr().out.splitlines()
    assert re.fullmatch(r"01_tiny +steps=7 +would execute.*", out[0]), out
    assert re.fullmatch(r"02_other +defaults +would execute.*", out[1]), out
    assert out[-1].startswith("2 chapter(s): 0 cached, 2 to run")
    assert not out_dir.exists() and not (book / "_build").exists()


def _record(folder: Path, seconds: float, parameters: dict) -> None:
    folder.mkdir(parents=True)
    record = {"seconds": seconds, "finished": "2026-01-01T00:00:00+00:00", "parameters": parameters}
    (folder / "run.json").write_text(json.dumps(record))


def test_longest_recorded_chapter_runs_first(book, tmp_path):
    from dlnbook.runner import expected_seconds, longest_first, plan_runs

    chapters = discover_chapters(book / "chapters")
    plans = plan_runs(chapters, {}, tmp_path / "cache")
    assert longest_first(plans) == plans  # nothing known: the book's order
    _record(tmp_path / "cache" / "01_tiny-000000000000", 5.0, {})
    _record(tmp_path / "cache" / "02_other-000000000000", 50.0, {})
    assert [p.chapter.name for p in longest_first(plans)] == ["02_other", "01_tiny"]
    assert expected_seconds(plans[1]) == (50.0, "recorded")


def test_a_recorded_duration_is_scaled_by_the_time_estimate(tmp_path):
    from dlnbook.runner import expected_seconds, plan_points

    nb = tiny_chapter()
    nb.cells[1].source += "# time: steps * 0.01\n"
    nbformat.write(nb, tmp_path / "01_timed.ipynb")
    chapter = load_chapter(tmp_path / "01_timed.ipynb")
    (plan,) = plan_points(chapter, [{"steps": 60}], tmp_path / "cache")
    assert expected_seconds(plan) == (pytest.approx(0.6), "guess")
    _record(tmp_path / "cache" / "01_timed-000000000000", 10.0, {"steps": 30})
    assert expected_seconds(plan) == (pytest.approx(20.0), "recorded")


def test_chapter_7_comes_first_when_nothing_is_recorded(tmp_path):
    from dlnbook.runner import longest_first, plan_runs

    plans = plan_runs(discover_chapters(REPO / "chapters"), {}, tmp_path / "cache")
    assert longest_first(plans)[0].chapter.name == "07_experiments"


def test_build_hands_its_plans_to_the_book_which_does_not_plan_again(book, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from dlnbook import sphinx_ext
    from dlnbook.runner import PLANS_ENV, encode_plans, plan_runs

    chapters = discover_chapters(book / "chapters")
    plans = plan_runs(chapters, {"01_tiny": {"steps": 7, "widths": (3, 2, 3)}}, tmp_path)
    monkeypatch.setenv(PLANS_ENV, encode_plans(plans))

    def refuse(*args, **kwargs):
        raise AssertionError("planned again")

    monkeypatch.setattr(sphinx_ext, "plan_runs", refuse)
    monkeypatch.delenv("DLNBOOK_PARAMS_FILE", raising=False)
    app = SimpleNamespace(srcdir=str(book), config=SimpleNamespace(dlnbook_params_file=""))
    assert sphinx_ext._BookRunner()._plans(app) == plans
