"""Fixtures of the book tests: building (mini) books with jupyter-book in temporary folders."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "profiles" / "smoke.yml"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Build:
    """Result of one ``jupyter-book build`` run."""

    returncode: int
    output: str
    seconds: float
    build_dir: Path

    @property
    def html(self) -> Path:
        return self.build_dir / "html"

    @property
    def executed(self) -> Path:
        return self.build_dir / "executed"

    @property
    def started(self) -> list[str]:
        """Chapters the build executed (from the progress lines)."""
        return re.findall(r"dlnbook: (\S+): started", self.output)


def jupyter_book_exe() -> str:
    exe = Path(sys.executable).with_name("jupyter-book")
    found = str(exe) if exe.exists() else shutil.which("jupyter-book")
    if not found:
        pytest.fail("jupyter-book is not installed in this environment")
    return found


def build_book(
    source: Path, output: Path, params_file: Path | None = None, timeout: float = 900
) -> Build:
    """Run ``jupyter-book build SOURCE --path-output OUTPUT -W --keep-going``."""
    env = dict(os.environ)
    env.pop("DLNBOOK_PARAMS_FILE", None)
    if params_file is not None:
        env["DLNBOOK_PARAMS_FILE"] = str(params_file)
    cmd = [jupyter_book_exe(), "build", str(source), "--path-output", str(output)]
    start = time.monotonic()
    proc = subprocess.run(
        [*cmd, "-W", "--keep-going"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    seconds = time.monotonic() - start
    output_text = _ANSI.sub("", proc.stdout + "\n" + proc.stderr)
    return Build(proc.returncode, output_text, seconds, output / "_build")


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory) -> Build:
    """The repository's book built once with the smoke profile into a temporary folder."""
    out = tmp_path_factory.mktemp("smoke-book")
    result = build_book(REPO, out, SMOKE)
    assert result.returncode == 0, f"smoke build failed:\n{result.output[-6000:]}"
    return result


def make_mini_book(root: Path, chapters: dict[str, nbformat.NotebookNode]) -> Path:
    """A book with the repository's configuration, the given chapters and its own copy of
    the ``dlncore`` sources as the hashed library folder (so tests can edit it)."""
    root.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    config["sphinx"]["config"]["dlnbook_core_dir"] = str(root / "core")
    (root / "_config.yml").write_text(yaml.safe_dump(config))
    toc = {
        "format": "jb-book",
        "root": "index",
        "chapters": [{"file": f"chapters/{name}"} for name in chapters],
    }
    (root / "_toc.yml").write_text(yaml.safe_dump(toc))
    (root / "index.md").write_text("# Mini book\n\nA test book.\n")
    shutil.copy(REPO / "references.bib", root / "references.bib")
    shutil.copytree(REPO / "dlncore", root / "core", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "chapters").mkdir(exist_ok=True)
    for name, nb in chapters.items():
        nbformat.write(nb, root / "chapters" / f"{name}.ipynb")
    return root


def read_chapter(name: str) -> nbformat.NotebookNode:
    """A repository chapter notebook."""
    return nbformat.read(REPO / "chapters" / f"{name}.ipynb", as_version=4)


def tiny_chapter(title: str, figure: str) -> nbformat.NotebookNode:
    """A self-contained chapter following the conventions: title, parameters, one figure."""
    plot = (
        "from pathlib import Path\n\n"
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n\n"
        "values = np.random.default_rng(seed).standard_normal(steps).cumsum()\n"
        "fig, ax = plt.subplots()\n"
        "ax.plot(values)\n"
        'Path("figures").mkdir(exist_ok=True)\n'
        f'fig.savefig("figures/{figure}.png")\n'
        f'fig.savefig("figures/{figure}.svg")'
    )
    cells = [
        new_markdown_cell(f"# {title}\n\nA random walk $x_k$; see {{numref}}`{figure}`."),
        new_code_cell(
            "seed = 0  # random seed [>= 0]\nsteps = 20  # number of steps [>= 0]",
            metadata={"tags": ["parameters"]},
        ),
        new_code_cell(plot, metadata={"mystnb": {"figure": {"name": figure, "caption": title}}}),
    ]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return new_notebook(cells=cells, metadata={"kernelspec": kernelspec})
