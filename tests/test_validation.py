"""Refusing bad parameters before anything runs: ranges, rules, estimates, clear messages.

Every parameter of every chapter of the repository is probed at, just inside and just
outside each bound of its range and with absurd values; a refused value must give exit
status 2 and one line, with nothing executed and no run folder. The slow tests run each
chapter once at the cheap extremes of its ranges, to show that the ranges are real.
"""

from __future__ import annotations

import math
import operator
import re
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_notebook

from dlnbook.chapters import (
    Chapter,
    ChapterError,
    Parameter,
    discover_chapters,
    effective_parameters,
    load_chapter,
)
from dlnbook.cli import main
from dlnbook.ranges import check_ranges
from dlnbook.rules import check_resources, gd_bytes, gd_seconds, machine_memory
from tests.test_prose import placeholders

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = discover_chapters(REPO / "chapters")
PARAMS = [(c, p) for c in CHAPTERS for p in c.parameters]
IDS = [f"{c.name}:{p.name}" for c, p in PARAMS]
SMOKE = yaml.safe_load((REPO / "profiles" / "smoke.yml").read_text())


class Executed(Exception):
    """Raised by the stand-in for the executor: validation let a value through."""


@pytest.fixture
def no_execution(monkeypatch):
    """Make any attempt to execute a chapter fail loudly; the chapters are read once."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise Executed

    monkeypatch.setattr("dlnbook.cli.run_plans", refuse)
    monkeypatch.setattr("dlnbook.cli._chapters", lambda book: CHAPTERS)


def refused(capfd, runs: Path, chapter: str, *args: str) -> str:
    """Run ``dln-book run CHAPTER ARGS`` and return its one error line (exit 2 asserted)."""
    assert main(["--book", str(REPO), "run", chapter, *args, "--runs-dir", str(runs)]) == 2
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1, captured.err
    assert lines[0].startswith("dln-book: error: ") and "Traceback" not in lines[0]
    assert not runs.exists()
    return lines[0]


# --- the declared ranges ---------------------------------------------------------------


def test_every_parameter_of_every_chapter_has_a_range_and_every_chapter_estimates():
    for chapter, param in PARAMS:
        if isinstance(param.default, bool):  # its type allows two values
            continue
        assert param.range is not None, f"{chapter.name}: {param.name} has no [range]"
        assert param.range.bounds or param.range.choices or param.range.length, param.name
        if isinstance(param.default, int | float) and not isinstance(param.default, bool):
            assert any(op in ("<", "<=") for op, _ in param.range.bounds), param.name
        if isinstance(param.default, list):
            assert any(op in ("<", "<=") for op, _ in param.range.length), param.name
    for chapter in CHAPTERS:
        assert {e.kind for e in chapter.estimates} == {"memory", "time"}, chapter.name


def test_list_shows_the_rules(capfd):
    assert main(["--book", str(REPO), "list"]) == 0
    out = capfd.readouterr().out
    assert "  rule: m >= d_x (X Xᵀ must be invertible)\n" in out
    assert out.count("  rule: ") == sum(len(c.rules) for c in CHAPTERS)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.name for c in CHAPTERS])
def test_defaults_and_smoke_values_pass_every_check(chapter):
    for overrides in ({}, SMOKE.get(chapter.name, {})):
        params = effective_parameters(chapter, overrides)
        check_ranges(chapter, params)
        check_resources(chapter, params)


# --- every bound of every parameter ----------------------------------------------------


def _inside(param: Parameter, number: float) -> bool:
    """Whether a number satisfies the bounds (an independent reading of the range)."""
    ops = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
    return all(ops[op](number, limit) for op, limit in param.range.bounds)


def _scalar(param: Parameter) -> Any:
    return param.default[0] if isinstance(param.default, list) else param.default


def _edges(param: Parameter) -> list[float]:
    """Values at, just inside and just outside each bound, of the parameter's type."""
    values: list[float] = []
    for _, limit in param.range.bounds:
        if isinstance(_scalar(param), int):
            values += [int(limit) - 1, int(limit), int(limit) + 1]
        else:
            values += [math.nextafter(limit, -math.inf), limit, math.nextafter(limit, math.inf)]
    return values


def _as_value(param: Parameter, number: Any) -> Any:
    """The number itself, or a list of the shortest allowed length holding it."""
    if not isinstance(param.default, list):
        return number
    shortest = max([1] + [limit + (op == ">") for op, limit in param.range.length if ">" in op])
    return [number] * shortest


def _numeric_params() -> list[tuple[Chapter, Parameter]]:
    return [(c, p) for c, p in PARAMS if p.range is not None and p.range.bounds]


NUMERIC = _numeric_params()


@pytest.mark.parametrize(
    ("chapter", "param"), NUMERIC, ids=[f"{c.name}:{p.name}" for c, p in NUMERIC]
)
def test_values_at_and_around_each_bound(chapter, param, tmp_path, capfd, no_execution):
    runs = tmp_path / "runs"
    for number in _edges(param):
        value = _as_value(param, number)
        if _inside(param, number):
            params = effective_parameters(chapter, {param.name: value})
            assert param.range.problem(params[param.name], params) is None, (param.name, value)
        else:
            line = refused(capfd, runs, chapter.name, "-p", f"{param.name}={value!r}")
            assert f"parameter {param.name!r} of chapter {chapter.name!r}" in line, line


ABSURD = ["inf", "-inf", "nan", "1e400", "-1e400", "9" * 400, "-" + "9" * 400, "9" * 5000]
ABSURD += ["'text'", "None", "True", "[]", "[[1]]", "[1, [2]]", "{}", "(", "[" * 300]


RANGED = [(c, p) for c, p in PARAMS if p.range is not None]  # all but booleans


@pytest.mark.parametrize(
    ("chapter", "param"), RANGED, ids=[f"{c.name}:{p.name}" for c, p in RANGED]
)
def test_absurd_values_are_refused_in_one_line(chapter, param, tmp_path, capfd, no_execution):
    runs = tmp_path / "runs"
    for text in ABSURD:
        if text == "[]" and not param.range.problem([], {}):
            continue  # a list that may be empty (e.g. no hidden layer)
        line = refused(capfd, runs, chapter.name, "-p", f"{param.name}={text}")
        assert repr(param.name) in line, line
        assert len(line) < 400, line
    if param.range.choices:
        bad = "['x']" if isinstance(param.default, list) else "'x'"
        assert "must be one of" in refused(capfd, runs, chapter.name, "-p", f"{param.name}={bad}")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_property_a_value_is_refused_exactly_when_outside_its_bounds(
    data, tmp_path_factory, capfd, no_execution
):
    chapter, param = data.draw(st.sampled_from(NUMERIC), label="parameter")
    if isinstance(_scalar(param), int):
        numbers = st.integers(min_value=-(10**12), max_value=10**12) | st.sampled_from(
            [int(v) for v in _edges(param)]
        )
    else:
        numbers = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(_edges(param))
    number = data.draw(numbers, label="value")
    value = _as_value(param, number)
    if math.isfinite(number) and _inside(param, number):
        params = effective_parameters(chapter, {param.name: value})
        assert param.range.problem(params[param.name], params) is None
    else:
        runs = tmp_path_factory.mktemp("runs") / "runs"
        line = refused(capfd, runs, chapter.name, "-p", f"{param.name}={value!r}")
        assert repr(param.name) in line


@pytest.mark.parametrize(("chapter", "param"), PARAMS, ids=IDS)
def test_list_lengths(chapter, param, tmp_path, capfd, no_execution):
    if not isinstance(param.default, list):
        return
    runs = tmp_path / "runs"
    entry = param.default[0]
    for op, limit in param.range.length:
        outside = limit - 1 if op == ">=" else limit + 1
        if outside >= 0:
            line = refused(capfd, runs, chapter.name, "-p", f"{param.name}={[entry] * outside!r}")
            assert "must have len" in line, line
        at = [entry] * limit
        params = effective_parameters(chapter, {param.name: at})
        assert param.range.problem(params[param.name], params) is None


# --- rules between parameters ----------------------------------------------------------

RULE_BREAKERS = [
    ("01_setting", ["m=8"], "needs m > d_x"),
    ("02_boundedness", ["m=7"], "needs m >= d_x"),
    ("02_boundedness", ["teacher_rank=9"], r"needs teacher_rank <= min\(d_x, d_y\)"),
    ("02_boundedness", ["eta_min=0.5"], "needs eta_min < eta_max"),
    ("03_critical_points", ["width=4"], r"needs width >= min\(d_x, d_y\)"),
    ("03_critical_points", ["eta_lo=5.0"], "needs eta_lo < eta_hi"),
    ("03_critical_points", ["noise=0.0", "teacher_rank=0"], "needs noise > 0 or teacher_rank > 0"),
    ("04_two_layers", ["bottleneck=6"], r"needs bottleneck < min\(d_x, d_y\)"),
    ("04_two_layers", ["quantile_low=0.95"], "needs quantile_low <= quantile_high"),
    ("05_deep_rank", ["hessian_width=6"], "needs hessian_width <= dim"),
    ("05_deep_rank", ["hessian_depths=[2]"], r"needs max\(hessian_depths\) >= 3"),
    ("05_deep_rank", ["deficient_ranks=[6]"], r"needs max\(deficient_ranks\) <= dim"),
    ("06_gd_vs_flow", ["samples=5"], "needs samples >= d_x"),
    ("06_gd_vs_flow", ["num_times=7"], "needs base_steps % num_times == 0"),
    ("07_experiments", ["target_rank=71"], "needs target_rank <= d"),
    ("07_experiments", ["tanh_samples=69"], "needs samples >= d and tanh_samples >= d"),
]


@pytest.mark.parametrize(("chapter", "args", "message"), RULE_BREAKERS)
def test_rules_are_checked_before_running(chapter, args, message, tmp_path, capfd, no_execution):
    line = refused(capfd, tmp_path / "runs", chapter, "-p", *args)
    assert re.search(message, line), line
    assert re.search(r"\(.+\), got \w+ = ", line), line  # the reason and the values


# --- the resource guard ----------------------------------------------------------------


def test_cost_model_matches_the_measured_rates():
    # README speed table: d = 10, N = 3 runs about 86k steps/s, d = 70, N = 5 about 5.4k
    assert 5e4 < 1 / gd_seconds(1, 3, 10) < 2e5
    assert 3e3 < 1 / gd_seconds(1, 5, 70) < 1e4
    assert gd_bytes(3, 1000, 2) == 8 * 8 * 2 * 3 * 1000**2


def test_huge_step_count_is_refused_with_the_estimate(tmp_path, capfd, no_execution):
    line = refused(capfd, tmp_path / "runs", "1", "-p", "width=500", "steps=10000000")
    assert re.search(r"would take an estimated 375 h \(time: .*gd_seconds\(steps", line), line
    assert "the limit is 24 h; pass --allow-large" in line


def test_huge_width_is_refused_with_the_memory_estimate(tmp_path, capfd, no_execution):
    args = ["d_x=200", "d_y=200", "width=200", "m=1000", "num_starts=100000"]  # about 1 TB
    line = refused(capfd, tmp_path / "runs", "4", "-p", *args)
    gb = machine_memory() / 1e9
    assert re.search(r"would need an estimated [\d.]+ TB \(memory: ", line), line
    assert f"this machine has {gb:.3g} GB" in line


def test_allow_large_lets_the_run_start(tmp_path, capfd, no_execution):
    with pytest.raises(Executed):
        main(
            ["--book", str(REPO), "run", "1", "-p", "width=500", "steps=10000000"]
            + ["--allow-large", "--runs-dir", str(tmp_path / "runs")]
        )


def test_build_checks_every_chapter_including_resources(tmp_path, capfd, no_execution):
    profile = tmp_path / "big.yml"
    profile.write_text("02_boundedness:\n  width: 500\n  steps: 100000000\n")
    out = tmp_path / "out"
    assert main(["--book", str(REPO), "build", "--params", str(profile), "--out", str(out)]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would take an estimated" in err[0] and not out.exists()


# --- parsing rules and estimates -------------------------------------------------------


def chapter_with(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "01_c.ipynb"
    nb = new_notebook(cells=[new_code_cell(source, metadata={"tags": ["parameters"]})])
    nbformat.write(nb, path)
    return path


BASE = "n = 3  # size [1..10]\nk = 2  # rank [0..10]\n"


def test_rules_and_estimates_are_parsed_once_at_load(tmp_path):
    source = BASE + (
        "# rule: k <= n: a rank is at most the size\n"
        "# memory: 8 * n ** 2\n# memory: 16 * n\n# time: 1e-3 * n * k\n"
    )
    chapter = load_chapter(chapter_with(tmp_path, source))
    (rule,) = chapter.rules
    assert (rule.expression, rule.reason) == ("k <= n", "a rank is at most the size")
    memory, elapsed = chapter.estimates
    assert memory.value({"n": 3, "k": 2}) == 8 * 9 + 16 * 3  # lines of a kind add up
    assert elapsed.value({"n": 3, "k": 2}) == pytest.approx(6e-3)
    with pytest.raises(
        ChapterError, match=r"needs k <= n \(a rank is at most the size\), got k = 4"
    ):
        check_ranges(chapter, {"n": 3, "k": 4})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("# rule: k <= q: why", "names unknown parameter 'q'"),
        ("# rule: k <= n", r"expected '# rule: EXPRESSION: why'"),
        ("# rule: __import__('os'): no", "only min, max, len"),
        ("# rule: n.real > 0: attribute", "uses Attribute, which is not allowed"),
        ("# rule: [i for i in n]: comprehension", "uses ListComp"),
        ("# time: n +* 2", "cannot read expression"),
    ],
)
def test_bad_rule_lines_fail_when_the_chapter_is_read(tmp_path, line, message):
    with pytest.raises(ChapterError, match=rf"01_c.ipynb, line 3: .*{message}"):
        load_chapter(chapter_with(tmp_path, BASE + line + "\n"))


# --- clear messages for other bad input ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--timeout", "2.5"],
            r"argument --timeout: expected a whole number of seconds, got '2.5'",
        ),
        (["--timeout", "0"], r"argument --timeout: expected at least 1 seconds, got 0"),
        (["--bogus"], r"unrecognized arguments: --bogus"),
    ],
)
def test_argument_errors_are_one_line(args, message, tmp_path, capfd):
    with pytest.raises(SystemExit) as exc:
        main(["--book", str(REPO), "run", "1", *args, "--runs-dir", str(tmp_path / "runs")])
    assert exc.value.code == 2
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.match(rf"dln-book: error: {message}", lines[0]), lines


def test_runs_dir_that_is_a_file_or_under_a_file(tmp_path, capfd, no_execution):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for runs in (afile, afile / "runs"):
        assert main(["--book", str(REPO), "run", "1", "--runs-dir", str(runs)]) == 2
        (line,) = capfd.readouterr().err.strip().splitlines()
        assert f"{afile} is not a folder" in line


def test_read_only_runs_dir(tmp_path, capfd, monkeypatch, no_execution):
    monkeypatch.setattr("dlnbook.cli.os.access", lambda path, mode: False)
    assert main(["--book", str(REPO), "run", "1", "--runs-dir", str(tmp_path / "r")]) == 2
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert f"--runs-dir {tmp_path / 'r'}: {tmp_path} is not writable" in line


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"01_setting:\n  steps: 5\n  steps: 6\n",
            r"key 'steps' appears twice \(line 3, column 3\)",
        ),
        (b"01_setting: {}\n01_setting: {}\n", r"key '01_setting' appears twice"),
        (b"01_setting:\n  noise: 0.1 \xff\n", "is not UTF-8 text"),
        (
            b"01_setting:\n  steps: .inf\n",
            "'steps' of chapter '01_setting' expects an int, got inf",
        ),
        (b"01_setting:\n  noise: .nan\n", "'noise' .* expects a finite number, got nan"),
    ],
)
def test_bad_profiles_are_one_line(tmp_path, capfd, content, message, no_execution):
    profile = tmp_path / "p.yml"
    profile.write_bytes(content)
    out = tmp_path / "out"
    assert main(["--book", str(REPO), "build", "--params", str(profile), "--out", str(out)]) == 2
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), lines
    assert not out.exists()


# --- the ranges are real: each chapter at the cheap extremes of its ranges -------------

EXTREMES = {
    "01_setting": dict(
        d_x=1,
        d_y=1,
        width=1,
        m=2,
        teacher_rank=0,
        depths=[1],
        steps=0,
        bottleneck_starts=1,
        bottleneck_steps=0,
    ),
    "02_boundedness": dict(
        d_x=1,
        d_y=1,
        width=1,
        m=1,
        teacher_rank=0,
        depth=1,
        num_step_sizes=1,
        steps=1,
        curves=1,
    ),
    "03_critical_points": dict(
        d_x=1,
        d_y=1,
        width=1,
        m=1,
        teacher_rank=0,
        sweep_depths=[1],
        search_points=2,
        refine_rounds=0,
        refine_points=1,
        search_steps=1,
        sweep_factors=[0.5],
        sweep_steps=1,
        path_steps=0,
        depth_list=[1],
        gaussian_steps=1,
    ),
    "04_two_layers": dict(
        d_x=2,
        d_y=2,
        width=1,
        bottleneck=1,
        m=2,
        teacher_rank=0,
        num_starts=1,
        steps=0,
        num_escape_scales=1,
        escape_starts=1,
        escape_max_steps=0,
    ),
    "05_deep_rank": dict(
        dim=1,
        m=1,
        depths=[2],
        staircase_starts=1,
        steps=1,
        hessian_depths=[3],
        hessian_width=1,
        escape_depths=[2],
        num_escape_scales=1,
        escape_starts=1,
        escape_max_steps=1,
        num_final_scales=1,
        final_starts=1,
        budgets=[0],
        deficient_ranks=[1],
        deficient_starts=1,
        deficient_depths=[2],
        deficient_steps=0,
    ),
    "06_gd_vs_flow": dict(
        d_x=1,
        d_y=1,
        hidden=[1],
        samples=1,
        teacher_rank=0,
        num_times=1,
        base_steps=1,
        halvings=1,
        one_step_etas=[0.2, 0.1],
        slope_points=2,
    ),
    "07_experiments": dict(
        d=2,
        target_rank=2,
        width=1,
        depths=[1],
        steps=0,
        samples=2,
        record=2,
        tanh_target_rank=1,
        tanh_width=1,
        tanh_samples=2,
        tanh_steps=0,
        workers=1,
    ),
    "08_calibration": dict(
        d=1,
        target_rank=1,
        steps=500,
        screen_factor=10.0,
        confirm_factor=10.0,
        spectra=["flat"],
        inits=["orthogonal"],
        init_norms=[1.0],
        input_scales=[1.0],
        samples_list=[1],
        widths=[1],
        data_seeds=[0],
        init_seeds=[0],
        refine_scales=[],
        refine_samples=[],
        refine_widths=[],
        refine_data_seeds=[],
        refine_init_seeds=[],
        finalists=0,
        show_best=1,
        record=10,
        workers=1,
    ),
}


HELD_BY_RULES = {  # one above the lower bound because of a rule such as m > d_x
    ("01_setting", "m"),
    ("04_two_layers", "d_x"),
    ("04_two_layers", "d_y"),
    ("04_two_layers", "m"),
    ("07_experiments", "samples"),
    ("07_experiments", "tanh_samples"),
    ("08_calibration", "steps"),
}


def test_the_extremes_are_the_lower_ends_of_their_ranges():
    chapters = {c.name: c for c in CHAPTERS}
    assert set(EXTREMES) == set(chapters)
    for name, values in EXTREMES.items():
        chapter = chapters[name]
        params = effective_parameters(chapter, {**SMOKE.get(name, {}), **values})
        check_ranges(chapter, params)
        for param in chapter.parameters:
            value = values.get(param.name)
            if isinstance(value, int) and (name, param.name) not in HELD_BY_RULES:
                assert not _inside(param, value - 1), (name, param.name)


@pytest.mark.slow
def test_each_chapter_runs_at_the_cheap_extremes_of_its_ranges(tmp_path):
    """All seven chapters, validated as ``dln-book run`` does, then executed two at a time."""
    from dlnbook.runner import plan_runs, run_plans

    profile = {name: {**SMOKE.get(name, {}), **values} for name, values in EXTREMES.items()}
    for chapter in CHAPTERS:
        params = effective_parameters(chapter, profile[chapter.name])
        check_ranges(chapter, params)
        check_resources(chapter, params)
    start = time.perf_counter()
    outcomes = run_plans(plan_runs(CHAPTERS, profile, tmp_path), jobs=2, log=lambda msg: None)
    assert sorted(o.plan.chapter.name for o in outcomes) == sorted(EXTREMES)
    # the prose of chapters 1-6 stays free of placeholders (-1, nan, None) at the extremes
    prose = [o.plan for o in outcomes if o.plan.chapter.name[:2] <= "06"]
    shown = {plan.chapter.name: placeholders(plan.executed_notebook) for plan in prose}
    assert not any(shown.values()), shown
    print(f"seven chapters at their extremes: {time.perf_counter() - start:.1f} s")
