"""Two costs around every chapter run, each against its baseline in the same process.

1. Planning the book's eight chapters (``runner.plan_runs``, as ``dln-book build`` and the
   Sphinx build do): each chapter's cache key reads the ``dlncore`` modules it runs. Baseline:
   every chapter reads the imports and the fingerprint of each module afresh, as the code did
   before session 7 (which kept only the parsed trees: the caches of
   ``cachekey._module_imports`` and ``cachekey.code_fingerprint`` cleared before each chapter).
2. One figure of the book's style (two log–log panels, mathtext tick labels) saved and shown
   in a notebook kernel. Baseline: the PNG (150 dpi) and the SVG written, then the figure drawn
   once more by the inline backend for the page; now ``save_figure`` shows the PNG it wrote.

Usage: ``.venv/bin/python benchmarks/bench_overhead.py`` (from the book's folder, seconds).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from IPython.utils.capture import capture_output  # noqa: E402

import dlncore.plotting  # noqa: E402
from dlnbook import cachekey  # noqa: E402
from dlnbook.chapters import discover_chapters  # noqa: E402
from dlnbook.runner import plan_runs  # noqa: E402

REPEATS = 5


def best(task) -> float:
    """Shortest wall time of :data:`REPEATS` calls of ``task()``."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        task()
        times.append(time.perf_counter() - start)
    return min(times)


def forget() -> None:
    cachekey._module_imports.cache_clear()
    cachekey.code_fingerprint.cache_clear()


def plan_each_alone(chapters, cache: Path) -> None:
    for chapter in chapters:
        forget()
        plan_runs([chapter], {}, cache)


def plan_together(chapters, cache: Path) -> None:
    forget()
    plan_runs(chapters, {}, cache)


def figure() -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    k = np.geomspace(1, 1e6, 400)
    for ax in axes:
        for n in (2, 3, 5):
            ax.plot(k, 1e3 / (1 + k / 10**n), label=f"$N = {n}$")
        dlncore.plotting.loss_axes(ax)
        ax.legend()
    return fig


def save_then_inline(folder: Path, shell: InteractiveShell) -> None:
    fig = figure()
    for ext in ("png", "svg"):
        fig.savefig(
            folder / f"fig.{ext}", dpi=150, metadata={"Date": None} if ext == "svg" else None
        )
    shell.display_formatter.format(fig)  # what the inline backend draws at the cell's end
    plt.close(fig)


def save_and_show(folder: Path, shell: InteractiveShell) -> None:
    with capture_output():
        dlncore.plotting.save_figure(figure(), "fig", folder)


def main() -> None:
    chapters = discover_chapters("chapters")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        before = best(lambda: plan_each_alone(chapters, folder))
        after = best(lambda: plan_together(chapters, folder))
        print(
            f"planning {len(chapters)} chapters: {before:.2f} s each alone, {after:.2f} s "
            f"together ({before / after:.1f}x)"
        )
        shell = InteractiveShell.instance()
        dlncore.plotting.set_style()
        before = best(lambda: save_then_inline(folder, shell))
        after = best(lambda: save_and_show(folder, shell))
        print(
            f"one figure saved and shown: {before:.2f} s drawn three times, {after:.2f} s "
            f"twice ({before / after:.2f}x)"
        )


if __name__ == "__main__":
    main()
