"""The cache key of a chapter run: what reruns a chapter and what does not (fast, no kernel)."""

import ast
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dlnbook.cachekey import chapter_modules, code_digest
from dlnbook.chapters import load_chapter
from dlnbook.runner import notebook_digest, plan_runs

MODULE = '''"""A module of the library."""

import numpy as np


def step(w, g, eta):
    """One gradient step.

    Parameters
    ----------
    w, g : ndarray
    """
    return w - eta * g  # plain GD
'''


def write_chapter(path: Path, params: str = "seed = 0  # seed", extra: str = "x = 1") -> Path:
    figure = {"mystnb": {"figure": {"name": "fig-a", "caption": "A caption."}}}
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Title\n\nSome prose."),
            new_code_cell(params, metadata={"tags": ["parameters"]}),
            new_code_cell(extra, metadata=figure),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    nbformat.write(nb, path)
    return path


def edited(path: Path, edit) -> str:
    """Digest of the notebook at ``path`` after ``edit(nb)`` (the file is rewritten)."""
    nb = nbformat.read(path, as_version=4)
    edit(nb)
    nbformat.write(nb, path)
    return notebook_digest(path)


def library(tmp_path: Path, source: str = MODULE) -> Path:
    core = tmp_path / "core"
    (core / "sub").mkdir(parents=True, exist_ok=True)
    (core / "__init__.py").write_text('"""The package."""\n\nfrom dlncore.sub import m\n')
    (core / "sub" / "m.py").write_text(source)
    return core


def library_digest(core: Path) -> str:
    """The code part of the key of a chapter that imports the library."""
    return code_digest(["import dlncore"], core)


def test_code_digest_ignores_comments_docstrings_blank_lines_and_other_files(tmp_path):
    core = library(tmp_path)
    before = library_digest(core)
    cosmetic = (
        MODULE.replace("# plain GD", "# the plain gradient step, see (2.1)")
        .replace('"""One gradient step.', '"""One step of gradient descent.\n\n    More text.')
        .replace("import numpy as np\n", "import numpy as np  # arrays\n\n\n")
        .replace("return w - eta * g", "return (w\n            - eta * g)")
    )
    (core / "sub" / "m.py").write_text(cosmetic)
    (core / "sub" / "m.py~").write_text("garbage from an editor")
    (core / "sub" / ".#m.py").write_text("an emacs lock file")
    (core / "sub" / ".m.py.swp").write_bytes(b"\0vim swap")
    (core / "__pycache__").mkdir()
    (core / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"junk")
    assert library_digest(core) == before


def test_code_digest_follows_every_code_change(tmp_path):
    core = library(tmp_path)
    before = library_digest(core)
    changes = [
        MODULE.replace("w - eta * g", "w - 2 * eta * g"),  # an expression
        MODULE.replace("def step(w, g, eta)", "def step(w, g, eta=0.1)"),  # a default
        MODULE + "\nSCALE = 1.0\n",  # a new statement
        MODULE.replace("import numpy as np", "import numpy as np\nimport math"),  # an import
        MODULE.replace('"""A module of the library."""', "print('side effect')"),
    ]
    digests = set()
    for source in changes:
        (core / "sub" / "m.py").write_text(source)
        digests.add(library_digest(core))
    assert before not in digests and len(digests) == len(changes)
    (core / "sub" / "m.py").write_text(MODULE)
    assert library_digest(core) == before
    (core / "sub" / "m.py").write_text("def broken(:\n")  # does not parse: its bytes count
    broken = library_digest(core)
    (core / "sub" / "m.py").write_text("def broken(: \n")
    assert library_digest(core) != broken


def test_notebook_digest_ignores_prose_captions_and_outputs(tmp_path):
    path = write_chapter(tmp_path / "c.ipynb")
    before = notebook_digest(path)

    def prose(nb):
        nb.cells[0].source = "# A better title\n\nFixed a typo in the prose."
        nb.cells.insert(2, new_markdown_cell("A new paragraph between the cells."))
        nb.cells[-1].metadata["mystnb"]["figure"]["caption"] = "A better caption."
        nb.cells[-1].metadata["tags"] = ["remove-input"]
        nb.cells[-1].outputs = [nbformat.v4.new_output("stream", text="hi")]
        nb.cells[-1].execution_count = 7
        nb.metadata["kernelspec"]["display_name"] = "Python 3 (ipykernel)"

    assert edited(path, prose) == before


def test_notebook_digest_follows_code_tags_and_kernel(tmp_path):
    path = write_chapter(tmp_path / "c.ipynb")
    before = notebook_digest(path)
    changes = [
        lambda nb: setattr(nb.cells[2], "source", "x = 2"),
        lambda nb: nb.cells.append(new_code_cell("y = 3")),
        lambda nb: nb.cells[3].metadata.setdefault("tags", []).append("raises-exception"),
        lambda nb: nb.metadata["kernelspec"].update(name="other"),
    ]
    digests = [before]
    for change in changes:
        digests.append(edited(path, change))
    assert len(set(digests)) == len(digests)


def test_plan_keys_follow_parameters_code_and_library(tmp_path):
    core = library(tmp_path)
    a = load_chapter(write_chapter(tmp_path / "a.ipynb"))
    b = load_chapter(write_chapter(tmp_path / "b.ipynb", extra="y = 2"))
    base = plan_runs([a, b], {}, tmp_path / "cache", core)
    assert base[0].key != base[1].key
    assert base[0].run_dir == (tmp_path / "cache" / f"a-{base[0].key[:12]}").resolve()
    assert not base[0].is_cached
    changed_param = plan_runs([a, b], {"a": {"seed": 1}}, tmp_path / "cache", core)
    assert changed_param[0].key != base[0].key
    assert changed_param[1].key == base[1].key
    assert plan_runs([a, b], {"a": {"seed": 0}}, tmp_path / "cache", core)[0].key == base[0].key

    (core / "sub" / "m.py").write_text(MODULE.replace("# plain GD", "# a comment only"))
    assert [p.key for p in plan_runs([a, b], {}, tmp_path / "cache", core)] == [p.key for p in base]
    (core / "sub" / "m.py").write_text(MODULE.replace("eta * g", "eta * g * 1.0"))
    changed_core = plan_runs([a, b], {}, tmp_path / "cache", core)
    assert all(new.key != old.key for new, old in zip(changed_core, base, strict=True))


# Per-chapter keys (dlnbook.cachekey): a chapter's key covers the core (the package's
# __init__.py and what it imports) and the package modules the chapter imports, transitively.

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "chapters").glob("*.ipynb"))


def code_cells(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def import_lines(cells: list[str]) -> str:
    """The chapter's top-level statements that import dlncore (one may span lines)."""
    statements = (
        ast.get_source_segment(cell, node)
        for cell in cells
        for node in ast.parse(cell).body
        if isinstance(node, ast.Import | ast.ImportFrom)
    )
    return "\n".join(s for s in statements if s.startswith(("import dlncore", "from dlncore")))


#: Runs each chapter's import lines (JSON on stdin: name -> code) in a fork of one interpreter
#: that holds no dlncore module, only the libraries dlncore imports (loaded once for all
#: chapters), and prints the dlncore modules each fork then holds: ``name module module ...``.
FORK_PER_CHAPTER = """
import json, os, sys
import matplotlib.pyplot, numba, numpy, pandas, scipy.integrate, scipy.optimize, seaborn
assert not [m for m in sys.modules if m.split(".")[0] == "dlncore"]
for name, code in json.loads(sys.stdin.read()).items():
    pid = os.fork()
    if pid == 0:
        exec(compile(code, name, "exec"), {})
        held = [m for m in sorted(sys.modules) if m.split(".")[0] == "dlncore"]
        print(name, *held, flush=True)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0, name
"""


@pytest.fixture(scope="module")
def loaded_modules(tmp_path_factory) -> dict[str, set[str]]:
    """Chapter -> the dlncore modules an interpreter holds after running the chapter's import
    lines (the independent, dynamic count that the static one must contain)."""
    code = {path.stem: import_lines(code_cells(path)) for path in CHAPTERS}
    env = {**os.environ, "MPLBACKEND": "agg", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", FORK_PER_CHAPTER],
        input=json.dumps(code),
        cwd=tmp_path_factory.mktemp("imports"),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {name: set(modules) for name, *modules in map(str.split, out.splitlines())}
    assert sorted(found) == sorted(code)
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_modules_contain_what_the_chapter_imports(path, loaded_modules):
    static = set(chapter_modules(code_cells(path), REPO / "dlncore"))
    dynamic = loaded_modules[path.stem]
    assert "dlncore.plotting" in dynamic  # the import lines were found and run
    assert dynamic <= static, dynamic - static
    # imported inside a function of dlncore.descent (a lazy import), never at import time
    assert "dlncore.compiled" in static and "dlncore.compiled" not in dynamic

    # no experiment module of another chapter: the static set is what the chapter loads
    def experiments(modules: set[str]) -> set[str]:
        return {m for m in modules if m.startswith("dlncore.experiments.")}

    assert experiments(static) == experiments(dynamic)


def test_attribute_relative_and_lazy_imports_are_followed(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg import a\n")
    (pkg / "a.py").write_text("from .b import f\n")  # relative, from a module
    (pkg / "b.py").write_text("def f():\n    from pkg import lazy\n")  # inside a function
    (pkg / "lazy.py").write_text("x = 1\n")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")  # relative, from a package
    (pkg / "sub" / "c.py").write_text("y = 2\n")
    (pkg / "sub" / "d.py").write_text("z = 3\n")
    (pkg / "unused.py").write_text("w = 4\n")
    core = {"pkg", "pkg.a", "pkg.b", "pkg.lazy"}
    modules = functools.partial(chapter_modules, core_dir=pkg, package="pkg")
    assert set(modules([])) == core  # the core: what __init__ imports
    assert set(modules(["import numpy as np\nx = np.pi"])) == core
    via_attribute = ["import pkg as p", "p.sub.d.z + p.a.f()"]
    assert set(modules(via_attribute)) == core | {"pkg.sub", "pkg.sub.c", "pkg.sub.d"}
    with_magic = ["%pip install --quiet something\nfrom pkg.sub import d"]
    assert set(modules(with_magic)) == core | {"pkg.sub", "pkg.sub.c", "pkg.sub.d"}
    before = code_digest(via_attribute, pkg, "pkg")
    (pkg / "unused.py").write_text("w = 5\n")
    (pkg / "sub" / "d.py").write_text('"""A docstring."""\n\nz = 3  # a comment\n')
    assert code_digest(via_attribute, pkg, "pkg") == before
    (pkg / "sub" / "d.py").write_text("z = 4\n")
    assert code_digest(via_attribute, pkg, "pkg") != before


def test_package_data_counts_for_the_chapters_of_its_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub" / "data" / "deep").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 0\n")
    (pkg / "sub" / "__init__.py").write_text("y = 1\n")
    (pkg / "sub" / "data" / "deep" / "table.csv").write_text("a,b\n1,2\n")
    uses_sub, core_only = ["import pkg.sub"], ["import pkg"]
    before = [code_digest(cells, pkg, "pkg") for cells in (uses_sub, core_only)]
    (pkg / "sub" / "data" / "deep" / ".table.csv.swp").write_text("an editor's file")
    (pkg / "sub" / "m.py~").write_text("a backup beside the modules")
    assert [code_digest(cells, pkg, "pkg") for cells in (uses_sub, core_only)] == before
    (pkg / "sub" / "data" / "deep" / "table.csv").write_text("a,b\n1,3\n")
    after = [code_digest(cells, pkg, "pkg") for cells in (uses_sub, core_only)]
    assert after[0] != before[0] and after[1] == before[1]


def stale_chapters(chapters, core: Path, cache: Path, base) -> set[str]:
    return {
        new.chapter.name
        for new, old in zip(plan_runs(chapters, {}, cache, core), base, strict=True)
        if new.key != old.key
    }


def test_a_module_change_makes_exactly_its_chapters_stale(tmp_path):
    core = tmp_path / "dlncore"
    shutil.copytree(REPO / "dlncore", core, ignore=shutil.ignore_patterns("__pycache__"))
    chapters = [load_chapter(p) for p in CHAPTERS]
    names = {c.name for c in chapters}
    base = plan_runs(chapters, {}, tmp_path / "cache", core)

    def edit(module: str, text: str) -> set[str]:
        path = core / module
        original = path.read_text()
        path.write_text(original + text)
        try:
            return stale_chapters(chapters, core, tmp_path / "cache", base)
        finally:
            path.write_text(original)

    assert edit("experiments/tracking.py", "\nEDITED = True\n") == {"06_gd_vs_flow"}
    assert edit("experiments/tracking.py", "\n# a comment only\n") == set()
    assert edit("experiments/stepsize.py", "\nEDITED = True\n") == {"03_critical_points"}
    assert edit("experiments/tanh.py", "\nEDITED = True\n") == {"07_experiments", "08_calibration"}
    assert edit("network.py", "\nEDITED = True\n") == names  # the core
    assert edit("compiled.py", "\nEDITED = True\n") == names  # reached from the core's gd
    assert edit("plotting.py", "\nEDITED = True\n") == names  # every chapter imports it
    (core / "experiments" / "new.py").write_text("x = 1\n")  # a module no chapter imports
    assert stale_chapters(chapters, core, tmp_path / "cache", base) == set()
