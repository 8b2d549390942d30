"""Every "What we checked" row can come out "no" (chapters/README.md, "Checks that can fail").

The fast tests read the chapters' sources: the held? cell of every row is either "n/a" or a
glued value, and every glue call that produces such a value is a conditional expression with a
computed condition and both a "yes" and a "no" branch; no glue call anywhere glues a literal
"yes" or "no". The slow test runs each chapter with its smoke values plus one change from
``profiles/break.yml`` that breaks one claim on purpose, and asserts that the run succeeds, that
every held? value is a verdict, and that the row of the broken claim shows "no".
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from dlnbook.chapters import check_profile, discover_chapters, load_profile, validate
from dlnbook.runner import plan_runs, run_plans
from tests.test_prose import placeholders, warnings_shown

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = {c.name: c for c in discover_chapters(REPO / "chapters")}
#: chapters whose tables this file covers (chapter 7 has its own engineer and issue)
COVERED = [name for name in sorted(CHAPTERS) if name[:2] in {"01", "02", "03", "04", "05", "06"}]
VERDICTS = {"yes", "no", "n/a"}
HELD_CELL = re.compile(r"^\{glue:text\}`([A-Za-z0-9_-]+)`$")

#: the held? value that the change of profiles/break.yml must turn into "no", with the reason
BROKEN = {
    "01_setting": ("ch1-reached", "step size far above 2 / lambda_max: the first run diverges"),
    "02_boundedness": ("ch2-descent-all", "largest step size far above the descent threshold"),
    "03_critical_points": ("ch3-sweep-ok", "search grid ends below the threshold"),
    "04_two_layers": ("ch4-diverged-ok", "step size far above the threshold"),
    "05_deep_rank": ("ch5-plateau-ok", "large starts: the loss crosses the lines without plateaus"),
    "06_gd_vs_flow": ("ch6-held-flowerr", "loose flow tolerance: its error is not negligible"),
}


def notebook(name: str) -> dict:
    return json.loads(CHAPTERS[name].path.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def checked_rows(nb: dict) -> list[list[str]]:
    """The rows (lists of cell texts) of the chapter's "What we checked" table."""
    boxes = [
        source(c)
        for c in nb["cells"]
        if c["cell_type"] == "markdown" and "{admonition} What we checked" in source(c)
    ]
    assert len(boxes) == 1, "expected exactly one 'What we checked' box"
    lines = [line.strip() for line in boxes[0].splitlines() if line.strip().startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[-1] == "held?", header
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert rows and all(len(row) == len(header) for row in rows), "malformed table row"
    return rows


def held_keys(nb: dict) -> list[str]:
    """Glue keys of the held? column ("n/a" rows left out)."""
    keys = []
    for row in checked_rows(nb):
        held = row[-1]
        if held == "n/a":
            continue
        match = HELD_CELL.match(held)
        assert match, f"held? cell {held!r} is neither a glued value nor 'n/a'"
        keys.append(match.group(1))
    return keys


def glue_calls(nb: dict) -> list[tuple[re.Pattern, ast.expr, str]]:
    """(key pattern, value expression, source line) of every ``glue(key, value, ...)`` call."""
    calls = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        text = source(cell)
        for node in ast.walk(ast.parse(text)):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "glue"):
                continue
            key, value = node.args[0], node.args[1]
            if isinstance(key, ast.Constant):
                pattern = re.escape(key.value)
            else:  # an f-string: its placeholders match anything
                assert isinstance(key, ast.JoinedStr), ast.unparse(key)
                pattern = "".join(
                    re.escape(part.value) if isinstance(part, ast.Constant) else ".+"
                    for part in key.values
                )
            calls.append((re.compile(pattern), value, ast.get_source_segment(text, node) or ""))
    return calls


def verdict_leaves(node: ast.expr) -> set[str] | None:
    """The verdicts a conditional ``"yes" if ... else "no"`` can produce (None if it is not one).

    Every condition must be computed (not a constant), and every branch a verdict literal or
    another such conditional.
    """
    if isinstance(node, ast.Constant):
        return {node.value} if node.value in VERDICTS else None
    if isinstance(node, ast.IfExp) and not isinstance(node.test, ast.Constant):
        body, orelse = verdict_leaves(node.body), verdict_leaves(node.orelse)
        return None if body is None or orelse is None else body | orelse
    return None


@pytest.mark.parametrize("name", COVERED)
def test_held_cells_are_computed_verdicts_that_can_be_no(name):
    nb = notebook(name)
    calls = glue_calls(nb)
    keys = held_keys(nb)
    assert keys, "a table without a single computed check"
    for key in keys:
        producers = [(value, line) for pattern, value, line in calls if pattern.fullmatch(key)]
        assert producers, f"held? value {key!r} is never glued"
        for value, line in producers:
            leaves = verdict_leaves(value)
            assert leaves is not None and {"yes", "no"} <= leaves, (
                f"held? value {key!r} is not a computed yes/no verdict: {line}"
            )


@pytest.mark.parametrize("name", COVERED)
def test_no_literal_verdict_is_glued(name):
    for _, value, line in glue_calls(notebook(name)):
        literal = isinstance(value, ast.Constant) and value.value in VERDICTS
        assert not literal, f"glues a literal verdict: {line}"


def test_the_rules_themselves_catch_a_literal_yes():
    """The checks above would fail on the defects they are meant to catch."""
    table = (
        "```{admonition} What we checked\n| claim | measured | criterion | held? |\n"
        "| --- | --- | --- | --- |\n| a | b | c | {glue:text}`x-ok` |\n| d | e | f | yes |\n```"
    )
    nb = {"cells": [{"cell_type": "markdown", "source": table}]}
    with pytest.raises(AssertionError, match="neither a glued value nor 'n/a'"):
        held_keys(nb)
    literal = 'glue("x-ok", "yes", display=False)'
    computed = 'glue(f"x-{k}", "yes" if v <= 1 else "n/a" if v != v else "no", display=False)'
    one_sided = 'glue("x-ok", "yes" if v <= 1 else "n/a", display=False)'
    code = {"cells": [{"cell_type": "code", "source": s} for s in (literal, computed, one_sided)]}
    (p1, v1, _), (p2, v2, _), (_, v3, _) = glue_calls(code)
    assert p1.fullmatch("x-ok") and p2.fullmatch("x-ok") and not p2.fullmatch("y-ok")
    assert verdict_leaves(v1) == {"yes"} and verdict_leaves(v2) == VERDICTS
    assert verdict_leaves(v3) == {"yes", "n/a"}  # cannot come out "no": rejected above
    assert verdict_leaves(ast.parse('"yes" if True else "no"', mode="eval").body) is None


# --- breaking runs ---------------------------------------------------------------------


def break_profile() -> dict:
    return load_profile(REPO / "profiles" / "break.yml")


def test_break_profile_is_smoke_plus_one_change_per_chapter():
    smoke = yaml.safe_load((REPO / "profiles" / "smoke.yml").read_text(encoding="utf-8"))
    profile = break_profile()
    check_profile(profile, CHAPTERS, "profiles/break.yml")
    assert sorted(profile) == sorted(BROKEN) == COVERED
    for name, params in profile.items():
        chapter = CHAPTERS[name]
        validate(chapter, params, allow_large=True)
        base = smoke.get(name, {})
        changed = {k for k in params if k not in base or params[k] != base[k]}
        assert set(base) <= set(params), f"{name}: break entry drops smoke values"
        assert len(changed) == 1, f"{name}: expected one change from smoke, got {changed}"
        assert BROKEN[name][0] in held_keys(notebook(name))


def glued_values(executed: Path) -> dict[str, str]:
    """Glue key -> plain-text value of an executed notebook."""
    values = {}
    for cell in json.loads(executed.read_text(encoding="utf-8"))["cells"]:
        for output in cell.get("outputs", []):
            scrap = output.get("metadata", {}).get("scrapbook")
            if scrap:
                text = output["data"][scrap["mime_prefix"] + "text/plain"]
                values[scrap["name"]] = text.strip("'\"")
    return values


@pytest.mark.slow
def test_each_chapter_has_a_parameter_set_that_breaks_a_claim(tmp_path):
    profile = break_profile()
    plans = plan_runs([CHAPTERS[name] for name in COVERED], profile, tmp_path)
    run_plans(plans, jobs=2, log=lambda line: None)  # raises ChapterFailure if a chapter fails
    for plan in plans:
        name = plan.chapter.name
        values = glued_values(plan.executed_notebook)
        keys = held_keys(notebook(name))
        verdicts = {key: values.get(key) for key in keys}
        assert set(verdicts.values()) <= VERDICTS, f"{name}: {verdicts}"
        key, why = BROKEN[name]
        assert verdicts[key] == "no", f"{name}: {key} = {verdicts[key]!r} ({why})"
        # a broken claim is said in words, not with placeholders (-1, nan, None)
        assert placeholders(plan.executed_notebook) == [], name
        assert warnings_shown(plan.executed_notebook) == [], name
