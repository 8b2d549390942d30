"""Refusing bad parameters before anything runs: types, ranges, rules, estimates, clear messages.

The checking code is tested by properties (hypothesis): ranges as written in brackets, the
coercion of values to the type of the default, rules and estimates, ``-p`` overrides. The
chapters' own declarations are tested once: every parameter has a bounded range whose cheap
extremes validate, and the slow test runs every chapter at those extremes. Bad input through
``main()`` gives exit status 2 and one line, with nothing executed and no run folder.
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
import re
import resource
import subprocess
import sys
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
    parse_override,
    validate,
)
from dlnbook.checks import gd_bytes, gd_seconds, machine_memory, parse_checks, parse_range
from dlnbook.cli import main
from tests.conftest import chapter_notebook, one_chapter_book
from tests.test_prose import placeholders, warnings_shown

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = discover_chapters(REPO / "chapters")
PARAMS = [(c, p) for c in CHAPTERS for p in c.parameters]
SMOKE = yaml.safe_load((REPO / "profiles" / "smoke.yml").read_text())
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
FAST = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


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


# --- ranges, as written in brackets ----------------------------------------------------

exact = st.builds(lambda m, e: float(f"{m}e{e}"), st.integers(-99, 99), st.integers(-8, 8))
limits = st.integers(-(10**6), 10**6).map(float) | exact
bounds = st.lists(st.tuples(st.sampled_from(list(OPS)), limits), min_size=1, max_size=3)


def bracket(items: list[tuple[str, Any]], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{op} {limit!r}" for op, limit in items)


def near(items: list[tuple[str, float]]) -> st.SearchStrategy[float]:
    """A value at, just below or just above one of the limits, or anywhere."""
    edges = [math.nextafter(lim, d) for _, lim in items for d in (-math.inf, math.inf)]
    return st.sampled_from(edges + [lim for _, lim in items]) | st.floats(-1e7, 1e7)


@FAST
@given(data=st.data(), items=bounds)
def test_property_a_number_is_in_range_exactly_when_it_passes_every_bound(data, items):
    allowed = parse_range(f"some meaning [{bracket(items)}]")
    assert allowed.bounds == tuple(items)
    number = data.draw(near(items) | st.integers(-(10**7), 10**7), label="number")
    inside = all(OPS[op](number, limit) for op, limit in items)
    assert (allowed.problem(number, {}) is None) == inside
    other = data.draw(near(items), label="other entry")
    both = inside and all(OPS[op](other, limit) for op, limit in items)
    assert (allowed.problem([number, other], {}) is None) == both  # every entry of a list
    for wrong in ("text", True, None):
        assert "expects numbers" in allowed.problem(wrong, {})


@FAST
@given(
    items=st.lists(
        st.tuples(st.sampled_from(list(OPS)), st.integers(0, 20)), min_size=1, max_size=2
    ),
    size=st.integers(0, 25),
)
def test_property_a_list_length_is_in_range_exactly_when_it_passes_every_length_bound(items, size):
    allowed = parse_range(f"widths [{bracket(items, 'len ')}]")
    assert allowed.length == tuple(items) and not allowed.bounds
    problem = allowed.problem(["x"] * size, {})
    assert (problem is None) == all(OPS[op](size, limit) for op, limit in items)
    assert problem is None or problem.startswith("must have len")


names = st.text("abcdefgh_xyz", min_size=1, max_size=6)


@FAST
@given(choices=st.lists(names, min_size=1, max_size=4, unique=True), value=names)
def test_property_a_string_is_allowed_exactly_when_it_is_a_choice(choices, value):
    allowed = parse_range("start [" + " | ".join(f"'{c}'" for c in choices) + "]")
    assert allowed.choices == tuple(choices)
    assert (allowed.problem(value, {}) is None) == (value in choices)
    assert (allowed.problem([value, choices[0]], {}) is None) == (value in choices)


@FAST
@given(
    items=st.lists(st.tuples(st.sampled_from([">=", "<="]), exact), min_size=1, max_size=2),
    lengths=st.lists(st.tuples(st.sampled_from([">=", "<="]), st.integers(0, 9)), max_size=2),
    chain=st.booleans(),
)
def test_property_a_range_reads_back_as_list_shows_it(items, lengths, chain):
    text = ", ".join(filter(None, ["chain" * chain, bracket(items), bracket(lengths, "len ")]))
    allowed = parse_range(f"x [{text}]")
    assert parse_range(f"x [{allowed}]") == allowed


@FAST
@given(
    widths=st.lists(st.integers(-2, 9), max_size=6),
    depth=st.none() | st.integers(0, 6),
    ends=st.none() | st.tuples(st.integers(1, 9), st.integers(1, 9)),
)
def test_property_widths_chain_exactly_when_they_fit_depth_and_data(widths, depth, ends):
    params = {} if depth is None else {"depth": depth}
    if ends:
        params |= {"d_x": ends[0], "d_y": ends[1]}
    fits = len(widths) >= 2 and min(widths) >= 1
    fits = fits and (depth is None or len(widths) == depth + 1)
    fits = fits and (not ends or (widths[0], widths[-1]) == ends)
    assert (parse_range("w [chain]").problem(widths, params) is None) == fits


@pytest.mark.parametrize(
    ("meaning", "message"),
    [("noise level [=> 0]", "'=> 0'"), ("noise [> 0, positive]", "'positive'"), ("[len]", "'len'")],
)
def test_unreadable_ranges_are_refused_and_other_brackets_are_meaning(meaning, message):
    with pytest.raises(ChapterError, match=f"cannot read range item {message}"):
        parse_range(meaning)
    assert parse_range("hidden widths [d_1, ..., d_N-1]") is None
    assert parse_range("no bracket") is None


# --- values coerced to the type of the default -----------------------------------------

TYPED = Chapter(
    Path("/book/chapters/c.ipynb"),
    tuple(
        Parameter(name, default, name)
        for name, default in [
            ("i", 3),
            ("f", 0.5),
            ("b", False),
            ("s", "a"),
            ("fl", [0.5, 1.0]),
            ("il", (1, 2)),
            ("free", None),
        ]
    ),
)
anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["1e-3", "inf", "nan", "1e400", "-0", "1_000"]),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner),
    max_leaves=6,
)


def as_float(value: Any) -> float | None:
    """What a float parameter accepts, read independently: a finite real number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def accepted(name: str, value: Any) -> Any:
    try:
        return effective_parameters(TYPED, {name: value})[name]
    except ChapterError as exc:
        assert str(exc).startswith(f"parameter {name!r} of chapter 'c' expects "), exc
        assert "\n" not in str(exc) and len(str(exc)) < 300
        return ChapterError


@FAST
@given(value=anything)
def test_property_values_are_coerced_to_the_type_of_the_default(value):
    int_ok = type(value) is int and -(2**63) < value < 2**63
    assert accepted("i", value) == (value if int_ok else ChapterError)
    number = as_float(value)
    assert accepted("f", value) == (ChapterError if number is None else number)
    assert accepted("b", value) == (value if isinstance(value, bool) else ChapterError)
    assert accepted("s", value) == (value if isinstance(value, str) else ChapterError)
    assert accepted("free", value) is value
    entries = value if isinstance(value, list | tuple) else None
    floats = None if entries is None else [as_float(v) for v in entries]
    want = ChapterError if floats is None or None in floats else floats
    assert accepted("fl", value) == want
    ints = entries is not None and all(type(v) is int and abs(v) < 2**63 for v in entries)
    assert accepted("il", value) == (tuple(entries) if ints else ChapterError)


def test_unknown_names_and_unreadable_chapters_are_refused():
    with pytest.raises(ChapterError, match=r"has no parameter 'x' \(known: i, f, b, s, fl"):
        effective_parameters(TYPED, {"x": 1})
    broken = Chapter(Path("/book/chapters/d.ipynb"), (), error="d.ipynb, line 2: bad")
    with pytest.raises(ChapterError, match="^d.ipynb, line 2: bad$"):
        validate(broken, {})


literals = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner),
    max_leaves=6,
)


@FAST
@given(value=literals, name=st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True))
def test_property_an_override_reads_back_any_python_literal(value, name):
    assert parse_override(f" {name} = {value!r} ") == (name, value)


@FAST
@given(raw=st.text(max_size=30) | st.sampled_from(["(", "[" * 300, "9" * 5000, "1e400"]))
def test_property_an_override_is_a_literal_or_its_stripped_text(raw):
    name, value = parse_override(f"x={raw}")
    try:
        literal = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError, RecursionError, MemoryError):
        literal = raw.strip()
    assert name == "x" and value == literal or math.isnan(value)


# --- bad values through the command line: exit 2, one line -----------------------------

ABSURD = ["inf", "-inf", "nan", "1e400", "-1e400", "9" * 400, "-" + "9" * 400, "9" * 5000]
ABSURD += ["'text'", "None", "True", "[]", "[[1]]", "[1, [2]]", "{}", "(", "[" * 300]
RANGED = [(c, p) for c, p in PARAMS if p.range is not None]  # all but booleans


def outside(param: Parameter) -> list[str]:
    """Values just outside each bound and length bound, written as for ``-p``."""
    entry = param.default[0] if isinstance(param.default, list) else param.default
    numbers = []
    for op, limit in param.range.bounds:
        step = 1 if isinstance(entry, int) else math.nextafter(limit, math.inf) - limit
        numbers.append(limit - step if ">" in op else limit + step)
    if isinstance(entry, int):
        numbers = [int(n) for n in numbers]
    values = [
        [n] * max(1, len(param.default)) if isinstance(param.default, list) else n for n in numbers
    ]
    for op, limit in param.range.length:
        values.append([entry] * (limit - 1 if ">" in op else limit + 1))
    return [repr(v) for v in values if v != []] or ["'x'"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(pair=st.sampled_from(RANGED), data=st.data())
def test_property_values_outside_a_range_are_refused_in_one_line(
    pair, data, tmp_path, capfd, no_execution
):
    chapter, param = pair
    text = data.draw(st.sampled_from(ABSURD) | st.sampled_from(outside(param)), label="value")
    if text == "[]" and not param.range.problem([], {}):
        return  # a list that may be empty (e.g. no hidden layer)
    line = refused(capfd, tmp_path / "runs", chapter.name, "-p", f"{param.name}={text}")
    assert f"parameter {param.name!r}" in line and len(line) < 400, line


def test_list_shows_the_rules(capfd):
    assert main(["--book", str(REPO), "list"]) == 0
    out = capfd.readouterr().out
    assert "  rule: m >= d_x (X Xᵀ must be invertible)\n" in out
    assert out.count("  rule: ") == sum(len(c.rules) for c in CHAPTERS)


@pytest.mark.parametrize(
    "args",
    [
        ["run", "1", "-p", "width=2", "-p", "width=4"],
        ["run", "1", "-p", "width=2", "steps=3", "width=2"],
        ["sweep", "1", "-p", "width=2,4", "-p", "width=8"],
        ["sweep", "1", "-p", "width=2,4", "--param", "steps=1", "width=8"],
    ],
)
def test_a_parameter_given_twice_is_refused_naming_it(args, tmp_path, capfd, no_execution):
    with pytest.raises(SystemExit) as exc:
        main(["--book", str(REPO), *args, "--runs-dir", str(tmp_path / "runs")])
    assert exc.value.code == 2
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert line.startswith("dln-book: error: parameter 'width' is given twice"), line


@pytest.mark.parametrize("text", ["width: [2, 4]\n", "points: [{width: 2}, {width: 4}]\n"])
def test_a_parameter_in_the_sweep_file_and_with_p_is_refused(text, tmp_path, capfd, no_execution):
    (tmp_path / "p.yml").write_text(text)
    args = ["sweep", "1", "--params", str(tmp_path / "p.yml"), "-p", "width=8", "--dry-run"]
    assert main(["--book", str(REPO), *args]) == 2
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert (
        line == f"dln-book: error: parameter 'width' is given in {tmp_path / 'p.yml'} and with -p"
    )


def test_a_broken_parameters_cell_blocks_only_its_chapter(tmp_path, capfd):
    good = chapter_notebook("# Good", "steps = 3  # iterations [0..10]", "x = steps")
    book = one_chapter_book(tmp_path, "01_good", good)
    broken = chapter_notebook("# Broken", "steps = (3  # iterations [0..10]", "x = 1")
    nbformat.write(broken, book / "chapters" / "02_broken.ipynb")
    (book / "chapters" / "03_notjson.ipynb").write_text("{")
    assert main(["--book", str(book), "list"]) == 0
    out = capfd.readouterr().out
    assert "01_good: Good\n  parameter" in out and "  steps  " in out
    assert re.search(r"02_broken: cannot be read: .*02_broken.ipynb, line 1: expected", out)
    assert "03_notjson: cannot be read: " in out
    assert main(["--book", str(book), "run", "1", "-p", "steps=4", "--dry-run"]) == 0
    assert "01_good  steps=4  would execute" in capfd.readouterr().out
    for chapter in ("2", "03_notjson"):
        assert main(["--book", str(book), "run", chapter, "--dry-run"]) == 2
        (line,) = capfd.readouterr().err.strip().splitlines()
        assert re.match(r"dln-book: error: .*(line 1: expected|cannot read notebook)", line)


# --- YAML: profiles and sweep files, one loader ----------------------------------------

LEVELS = "abcdefghi"
BOMB = "  - &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"  - &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in itertools.pairwise(LEVELS)
)  # nine levels of nine: 9**9 = 387 million entries once expanded, 427 bytes as a profile


def yaml_command(kind: str, text: str, tmp_path: Path) -> list[str]:
    """The arguments of ``build`` (a profile of chapter 1) or ``sweep 1`` (a sweep file)
    reading ``text`` as the parameters of chapter 1."""
    path = tmp_path / f"{kind}.yml"
    if kind == "profile":
        path.write_text("01_setting:\n" + "".join(f"  {line}\n" for line in text.splitlines()))
        return ["--book", str(REPO), "build", "--params", str(path), "--out", str(tmp_path / "o")]
    path.write_text(text)
    return ["--book", str(REPO), "sweep", "1", "--params", str(path), "--runs-dir", str(tmp_path)]


def limited_memory() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (2**31, 2**31))


@pytest.mark.parametrize("kind", ["profile", "sweep file"])
def test_an_alias_bomb_is_refused_at_once(kind, tmp_path):
    """In a child process limited to 2 GB of data and 60 s, so that a loader that expands
    the bomb fails this test instead of the machine."""
    args = yaml_command(kind, "depths:\n" + BOMB, tmp_path)
    assert len(Path(args[args.index("--params") + 1]).read_bytes()) < 519  # issue 22: 519 bytes
    script = (
        "import sys, time; from dlnbook.cli import main; start = time.perf_counter(); "
        "code = main(sys.argv[1:]); print(time.perf_counter() - start); sys.exit(code)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limited_memory,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert re.match(
        r"dln-book: error: .* is not valid YAML: aliases \(\*name\) are not allowed", line
    )
    assert float(proc.stdout) < 5, "refused, but slowly"


@pytest.mark.parametrize("kind", ["profile", "sweep file"])
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: 5\nsteps: 6\n", r"key 'steps' appears twice \(line \d+, column \d+\)"),
        ("base: &b {steps: 5}\nwidth: {<<: *b}\n", r"aliases \(\*name\) are not allowed"),
        ("width:\n  <<: {steps: 5}\n", r"merge keys \(<<\) are not allowed"),
        ("depths: " + "[" * 600 + "]" * 600 + "\n", "nested too deeply"),
    ],
)
def test_profiles_and_sweep_files_follow_the_same_yaml_rules(
    kind, text, message, tmp_path, capfd, no_execution
):
    assert main([*yaml_command(kind, text, tmp_path), "--dry-run"]) == 2
    (line,) = capfd.readouterr().err.strip().splitlines()
    what = "parameter profile" if kind == "profile" else "sweep file"
    assert re.match(rf"dln-book: error: {what} .*{message}", line), line
    assert not (tmp_path / "o").exists()


# --- rules and estimates ---------------------------------------------------------------

terms = st.recursive(
    st.sampled_from(["a", "b"]) | st.integers(0, 50).map(str),
    lambda inner: st.tuples(inner, st.sampled_from(["+", "-", "*", "//", "%"]), inner).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"
    ),
    max_leaves=8,
)


@FAST
@given(a=st.integers(-100, 100), b=st.integers(-100, 100), first=terms, second=terms)
def test_property_rules_hold_and_estimates_add_up_as_python_computes_them(a, b, first, second):
    source = f"# rule: a <= b: a at most b\n# time: {first}\n# time: {second}\n"
    (rule,), (estimate,) = parse_checks(source, {"a", "b"})
    problem = rule.problem({"a": a, "b": b})
    assert (problem is None) == (a <= b)
    assert problem is None or problem == f"needs a <= b (a at most b), got a = {a}, b = {b}"
    try:
        want = float(eval(first, {}, {"a": a, "b": b}) + eval(second, {}, {"a": a, "b": b}))
    except ZeroDivisionError:
        with pytest.raises(ChapterError, match="cannot evaluate"):
            estimate.value({"a": a, "b": b})
    else:
        assert estimate.value({"a": a, "b": b}) == want
    assert str(estimate) == f"{first} + {second}"


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
        validate(chapter, {"k": 4})


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
    for runs, dry in itertools.product((afile, afile / "runs"), ([], ["--dry-run"])):
        assert main(["--book", str(REPO), "run", "1", "--runs-dir", str(runs), *dry]) == 2
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


def test_every_parameter_has_a_bounded_range_whose_cheap_extremes_validate():
    chapters = {c.name: c for c in CHAPTERS}
    assert set(EXTREMES) == set(chapters) and not [c.error for c in CHAPTERS if c.error]
    for name, chapter in chapters.items():
        assert {e.kind for e in chapter.estimates} == {"memory", "time"}, name
        for overrides in ({}, SMOKE.get(name, {})):  # defaults and smoke values validate
            validate(chapter, overrides)
        extremes = validate(chapter, {**SMOKE.get(name, {}), **EXTREMES[name]})
        for param in chapter.parameters:
            where, default = f"{name}: {param.name}", param.default
            if isinstance(default, bool):  # its type allows two values
                continue
            assert param.range is not None, f"{where} has no [range]"
            assert param.range.bounds or param.range.choices or param.range.length, where
            if isinstance(default, int | float):
                assert {op for op, _ in param.range.bounds} & {"<", "<="}, (
                    f"{where}: no upper bound"
                )
            if isinstance(default, list):
                assert {op for op, _ in param.range.length} & {"<", "<="}, (
                    f"{where}: no length bound"
                )
            value = EXTREMES[name].get(param.name)
            if isinstance(value, int) and (name, param.name) not in HELD_BY_RULES:
                below = {**extremes, param.name: value - 1}
                assert param.range.problem(value - 1, below), f"{where}: not the lower end"


@pytest.mark.slow
def test_each_chapter_runs_at_the_cheap_extremes_of_its_ranges(tmp_path):
    """All seven chapters, validated as ``dln-book run`` does, then executed two at a time."""
    from dlnbook.runner import plan_runs, run_plans

    profile = {name: {**SMOKE.get(name, {}), **values} for name, values in EXTREMES.items()}
    for chapter in CHAPTERS:
        validate(chapter, profile[chapter.name])
    start = time.perf_counter()
    outcomes = run_plans(plan_runs(CHAPTERS, profile, tmp_path), jobs=2, log=lambda msg: None)
    assert sorted(o.plan.chapter.name for o in outcomes) == sorted(EXTREMES)
    # the prose of chapters 1-6 stays free of placeholders (-1, nan, None) at the extremes
    prose = [o.plan for o in outcomes if o.plan.chapter.name[:2] <= "06"]
    shown = {plan.chapter.name: placeholders(plan.executed_notebook) for plan in prose}
    assert not any(shown.values()), shown
    # and no chapter prints a warning (a diverging run is reported as diverged, in words)
    printed = {o.plan.chapter.name: warnings_shown(o.plan.executed_notebook) for o in outcomes}
    assert not any(printed.values()), printed
    print(f"seven chapters at their extremes: {time.perf_counter() - start:.1f} s")


def test_the_sphinx_build_validates_as_the_commands_do(tmp_path, monkeypatch):
    """Estimates included (it checked ranges only); ``DLNBOOK_ALLOW_LARGE`` waives them for a
    plain ``jupyter-book build`` (``dln-book build --allow-large`` hands its plans over)."""
    from types import SimpleNamespace

    from sphinx.errors import ExtensionError

    from dlnbook.sphinx_ext import _BookRunner

    nb = chapter_notebook("# Big", "steps = 5  # iterations [0..1e12]\n# time: steps", "x = 1")
    book = one_chapter_book(tmp_path, "01_big", nb)
    (book / "big.yml").write_text("01_big:\n  steps: 100000000\n")
    config = dict(dlnbook_chapters_dir="chapters", dlnbook_cache_dir="", dlnbook_core_dir="")
    config |= dict(dlnbook_params_file="big.yml", dlnbook_jobs=0, dlnbook_timeout=0)
    app = SimpleNamespace(config=SimpleNamespace(**config), srcdir=book, outdir=book / "o")
    monkeypatch.delenv("DLNBOOK_PARAMS_FILE", raising=False)
    monkeypatch.delenv("DLNBOOK_ALLOW_LARGE", raising=False)
    with pytest.raises(
        ExtensionError, match=r"'01_big' would take an estimated 27,778 h \(time: steps\)"
    ):
        _BookRunner().builder_inited(app)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise Executed

    monkeypatch.setattr("dlnbook.sphinx_ext.run_plans", refuse)
    monkeypatch.setattr("dlnbook.sphinx_ext.plan_runs", lambda *args: [])
    monkeypatch.setenv("DLNBOOK_ALLOW_LARGE", "1")
    with pytest.raises(Executed):
        _BookRunner().builder_inited(app)
