"""The cache key of a chapter run: what reruns a chapter and what does not (fast, no kernel)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dlnbook.chapters import load_chapter
from dlnbook.runner import hash_tree, notebook_digest, plan_runs

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
    (core / "__init__.py").write_text('"""The package."""\n')
    (core / "sub" / "m.py").write_text(source)
    return core


def test_hash_tree_ignores_comments_docstrings_blank_lines_and_other_files(tmp_path):
    core = library(tmp_path)
    before = hash_tree(core)
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
    (core / "notes.txt").write_text("notes")
    (core / "__pycache__").mkdir()
    (core / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"junk")
    assert hash_tree(core) == before


def test_hash_tree_follows_every_code_change(tmp_path):
    core = library(tmp_path)
    before = hash_tree(core)
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
        digests.add(hash_tree(core))
    assert before not in digests and len(digests) == len(changes)
    (core / "sub" / "m.py").write_text(MODULE)
    assert hash_tree(core) == before
    (core / "sub" / "m.py").rename(core / "sub" / "n.py")  # a renamed module
    assert hash_tree(core) != before
    (core / "sub" / "n.py").write_text("def broken(:\n")  # does not parse: its bytes count
    broken = hash_tree(core)
    (core / "sub" / "n.py").write_text("def broken(: \n")
    assert hash_tree(core) != broken


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
