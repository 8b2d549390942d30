"""Fast tests of dlnbook: parameters cells, overrides, profiles, cache pruning, rendering."""

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dlnbook.chapters import (
    ChapterError,
    check_profile,
    discover_chapters,
    effective_parameters,
    load_chapter,
    load_profile,
    parse_override,
    parse_parameters_source,
)
from dlnbook.checks import human
from dlnbook.runner import plan_runs, prune_cache
from dlnbook.sphinx_ext import figure_problems, render_executed

REPO = Path(__file__).resolve().parents[1]


def write_chapter(path: Path, params: str, extra: str = "x = 1") -> Path:
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Title"),
            new_code_cell(params, metadata={"tags": ["parameters"]}),
            new_code_cell(extra),
        ]
    )
    nbformat.write(nb, path)
    return path


def test_parse_parameters_cell():
    source = (
        "# comment-only lines and blank lines are fine\n\n"
        "seed = 0  # random seed\n"
        "eta = 3e-5  # step size # with a hash\n"
        "depths = [2, 3, 5]  # depths\n"
        "name = 'a # b'  # a string containing a hash\n"
    )
    params = parse_parameters_source(source)
    assert [p.name for p in params] == ["seed", "eta", "depths", "name"]
    assert [p.default for p in params] == [0, 3e-5, [2, 3, 5], "a # b"]
    assert params[1].meaning == "step size # with a hash"
    assert params[3].meaning == "a string containing a hash"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("seed = 0", "needs a one-line '# meaning'"),
        ("seed = np.int64(0)  # seed", "must be a Python literal"),
        ("a, b = 1, 2  # two", "expected 'name = literal"),
        ("print(1)  # call", "expected 'name = literal"),
        ("steps = (  # open", "expected 'name = literal"),
        ("x = 1  # one\nx = 2  # two", "assigned twice"),
    ],
)
def test_parse_parameters_rejects_bad_lines(line, message):
    with pytest.raises(ChapterError, match=message):
        parse_parameters_source(line, "nb.ipynb")


def test_load_chapter_requires_one_parameters_cell(tmp_path):
    nb = new_notebook(cells=[new_code_cell("x = 1  # x")])
    nbformat.write(nb, tmp_path / "c.ipynb")
    with pytest.raises(ChapterError, match="exactly one code cell tagged 'parameters', found 0"):
        load_chapter(tmp_path / "c.ipynb")


def test_repository_chapters_are_valid():
    chapters = discover_chapters(REPO / "chapters")
    assert [c.name for c in chapters] == [
        "01_setting",
        "02_boundedness",
        "03_critical_points",
        "04_two_layers",
        "05_deep_rank",
        "06_gd_vs_flow",
        "07_experiments",
        "08_calibration",
    ]
    for chapter in chapters:
        seeds = [name for name in chapter.defaults if "seed" in name]
        assert seeds, f"{chapter.name}: seeds must be parameters"
    smoke = load_profile(REPO / "profiles" / "smoke.yml")
    check_profile(smoke, [c.name for c in chapters])
    for chapter in chapters:
        effective_parameters(chapter, smoke.get(chapter.name))


def test_repository_notebooks_have_no_outputs():
    for path in sorted((REPO / "chapters").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [], f"{path.name}: commit notebooks without outputs"
                assert cell["execution_count"] is None, f"{path.name}: execution counts"


def test_effective_parameters_merge_and_check(tmp_path):
    chapter = load_chapter(
        write_chapter(
            tmp_path / "c.ipynb",
            "seed = 0  # seed\neta = 0.1  # step\nfast = False  # flag\ndepths = [2]  # N",
        )
    )
    params = effective_parameters(chapter, {"seed": 3, "eta": 1, "depths": [2, 3]})
    assert params == {"seed": 3, "eta": 1.0, "fast": False, "depths": [2, 3]}
    assert isinstance(params["eta"], float)
    assert effective_parameters(chapter, {"eta": "1e-3"})["eta"] == 1e-3  # YAML's 1e-3
    with pytest.raises(ChapterError, match="has no parameter 'steps'.*known: seed, eta"):
        effective_parameters(chapter, {"steps": 1})
    with pytest.raises(ChapterError, match="'seed' of chapter 'c' expects an int"):
        effective_parameters(chapter, {"seed": 1.5})
    with pytest.raises(ChapterError, match="expects a bool"):
        effective_parameters(chapter, {"fast": 1})
    with pytest.raises(ChapterError, match="expects a number"):
        effective_parameters(chapter, {"eta": "big"})


def test_parse_override():
    assert parse_override("steps=100") == ("steps", 100)
    assert parse_override("eta = 1e-3") == ("eta", 1e-3)
    assert parse_override("depths=[2, 3]") == ("depths", [2, 3])
    assert parse_override("label=hello") == ("label", "hello")
    with pytest.raises(ChapterError, match="NAME=VALUE"):
        parse_override("steps")


def test_load_profile_errors(tmp_path):
    (tmp_path / "ok.yml").write_text("a:\n  steps: 5\nb:\n")
    assert load_profile(tmp_path / "ok.yml") == {"a": {"steps": 5}, "b": {}}
    (tmp_path / "empty.yml").write_text("")
    assert load_profile(tmp_path / "empty.yml") == {}
    (tmp_path / "bad.yml").write_text("a: [1, 2]\n")
    with pytest.raises(ChapterError, match="entry 'a' must map parameter names"):
        load_profile(tmp_path / "bad.yml")
    with pytest.raises(ChapterError, match="cannot read parameter profile"):
        load_profile(tmp_path / "missing.yml")
    with pytest.raises(ChapterError, match="unknown chapter.*zz"):
        check_profile({"zz": {}}, ["a", "b"], "p.yml")


@pytest.mark.parametrize(
    ("kind", "amount", "text"),
    [
        ("time", 0.4, "0 s"),
        ("time", 89.4, "89 s"),
        ("time", 90, "2 min"),
        ("time", 5399, "90 min"),
        ("time", 5400, "1.5 h"),
        ("time", 375 * 3600.0, "375 h"),
        ("time", 1e8, "27,778 h"),
        ("time", float("inf"), "inf h"),
        ("memory", 2.5e9, "2.5 GB"),
        ("memory", 1.2e12, "1.2 TB"),
    ],
)
def test_human_amounts_for_estimates_dry_runs_and_progress_lines(kind, amount, text):
    """One formatter (``checks.human``) for the estimates' messages, the dry run's times and
    the driver's "done in" lines: seconds below 90, minutes below 1.5 h, then hours."""
    assert human(kind, amount) == text


def test_prune_cache_keeps_current_and_recent(tmp_path):
    core = tmp_path / "core"
    core.mkdir()
    chapter = load_chapter(write_chapter(tmp_path / "a.ipynb", "seed = 0  # seed"))
    (plan,) = plan_runs([chapter], {}, tmp_path / "cache", core)
    plan.run_dir.mkdir(parents=True)
    old = [tmp_path / "cache" / f"a-{i:012x}" for i in range(4)]
    for directory in old:
        directory.mkdir()
    other = tmp_path / "cache" / "ab-000000000000"
    other.mkdir()
    deleted = prune_cache([plan], keep=3)
    assert len(deleted) == 2
    assert plan.run_dir.is_dir() and other.is_dir()
    assert sum(d.is_dir() for d in old) == 2


def executed_copy(plan, injected: str) -> nbformat.NotebookNode:
    """Write what papermill would: the chapter with an injected cell and outputs."""
    nb = nbformat.read(plan.chapter.path, as_version=4)
    nb.cells.insert(2, new_code_cell(injected, metadata={"tags": ["injected-parameters"]}))
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.outputs = [nbformat.v4.new_output("stream", text=f"output {i}")]
        cell.execution_count = i + 1
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    plan.run_dir.mkdir(parents=True)
    nbformat.write(nb, plan.executed_notebook)
    return nb


def test_render_executed_hides_parameter_cells_and_shows_box(tmp_path):
    core = tmp_path / "core"
    core.mkdir()
    source = "seed = 0  # random seed\nsteps = 10  # GD steps [>= 0]"
    chapter = load_chapter(write_chapter(tmp_path / "a.ipynb", source))
    (plan,) = plan_runs([chapter], {"a": {"steps": 3}}, tmp_path / "cache", core)
    executed_copy(plan, "seed = 0\nsteps = 3")

    rendered = json.loads(render_executed(plan, "profiles/x.yml"))
    cells = rendered["cells"]
    for cell in cells:
        cell["source"] = "".join(cell["source"])
    assert cells[0]["source"] == "# Title"
    box = cells[1]["source"]
    assert box.startswith("````{admonition} Parameters of this run")
    assert "| `seed` | `0` | random seed |" in box
    assert "| **`steps`** | `3` (default `10`) | GD steps |" in box  # changed: name in bold
    assert "overridden by `profiles/x.yml`" in box
    assert [c["source"] for c in cells[2:]] == [source, "x = 1"]  # no injected cell
    assert "remove-cell" in cells[2]["metadata"]["tags"]
    assert "remove-cell" not in cells[3]["metadata"].get("tags", [])
    assert ["".join(c["outputs"][0]["text"]) for c in cells[2:]] == ["output 0", "output 2"]
    assert cells[3]["execution_count"] == 3
    assert rendered["metadata"]["language_info"]["name"] == "python"


def test_render_executed_takes_the_text_from_the_current_notebook(tmp_path):
    chapter = load_chapter(write_chapter(tmp_path / "a.ipynb", "seed = 0  # seed"))
    (plan,) = plan_runs([chapter], {}, tmp_path / "cache", tmp_path)
    executed_copy(plan, "seed = 0")
    nb = nbformat.read(chapter.path, as_version=4)
    nb.cells[0].source = "# New title\n\nFixed prose."
    nb.cells.insert(2, new_markdown_cell("A new paragraph."))
    nb.cells[3].metadata["mystnb"] = {"figure": {"name": "fig-a", "caption": "New caption."}}
    nbformat.write(nb, chapter.path)
    (replanned,) = plan_runs([load_chapter(chapter.path)], {}, tmp_path / "cache", tmp_path)
    assert replanned.key == plan.key  # prose reruns nothing

    cells = json.loads(render_executed(replanned))["cells"]
    assert "".join(cells[0]["source"]) == "# New title\n\nFixed prose."
    assert "".join(cells[3]["source"]) == "A new paragraph."
    assert cells[4]["metadata"]["mystnb"]["figure"]["caption"] == "New caption."
    assert "".join(cells[4]["outputs"][0]["text"]) == "output 2"

    nb.cells[3].source = "x = 2"  # not what ran (the build plans again first)
    nbformat.write(nb, chapter.path)
    with pytest.raises(ValueError, match="code cells of the notebook changed"):
        render_executed(replanned)


def test_figure_problems_flags_missing_and_duplicate_images():
    def cell(n_images):
        image = {"output_type": "display_data", "data": {"image/png": "x"}, "metadata": {}}
        text = {"output_type": "stream", "name": "stdout", "text": "hi"}
        return {
            "cell_type": "code",
            "metadata": {"mystnb": {"figure": {"name": f"fig-{n_images}"}}},
            "outputs": [text] + [image] * n_images,
        }

    nb = {"cells": [cell(1), cell(0), cell(2), {"cell_type": "code", "outputs": []}]}
    problems = figure_problems(nb)
    assert len(problems) == 2
    assert problems[0].startswith("figure cell 'fig-0' displays 0 images")
    assert problems[1].startswith("figure cell 'fig-2' displays 2 images")
