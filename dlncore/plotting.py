"""The book's figure style and the few plotting helpers every chapter shares."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

#: Colours for depths / series, in order.
PALETTE = sns.color_palette("colorblind")


def set_style() -> None:
    """Set the book's matplotlib/seaborn style (call once per chapter).

    In a Jupyter kernel it also makes the inline backend show figures as PNGs at twice their
    displayed size (``retina``): sharp when the book's pages scale a wide figure to the column,
    and still a raster image for link previews.
    """
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "axes.titlesize": "medium",
            "legend.fontsize": "small",
            "legend.frameon": False,
            "svg.fonttype": "none",
            "svg.hashsalt": "dln-book",
            "lines.linewidth": 1.6,
        }
    )
    _inline_retina()


def _in_kernel() -> bool:
    """Whether this runs in IPython (a notebook's kernel), without importing IPython."""
    ipython = sys.modules.get("IPython")
    return ipython is not None and ipython.get_ipython() is not None


def _inline_retina() -> None:
    """Inline figures as PNGs at twice the resolution; nothing outside an IPython kernel."""
    if not _in_kernel():
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("retina")


def panel_grid(
    n: int, panel: tuple[float, float], max_width: float = 12.0, **subplot_kw
) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure of ``n`` panels of size ``panel`` (inches), wrapped into rows at ``max_width``.

    At the book's style a page shows a figure of at most ``max_width`` inches across its
    ``full-width`` column with tick labels of at least 10 px (at a 1300 px window), so a
    chapter rerun with more panels gets more rows instead of smaller text.

    Parameters
    ----------
    n : int
        Number of panels (>= 1).
    panel : tuple of float
        Width and height of one panel in inches.
    max_width : float
        Largest figure width in inches; at least one panel per row.
    **subplot_kw
        Passed to :func:`matplotlib.pyplot.subplots` (e.g. ``sharey=True``).

    Returns
    -------
    fig : Figure
    axes : list of Axes
        The ``n`` panels, row by row (the unused cells of the last row are removed).
    """
    columns = max(1, min(n, int(max_width // panel[0])))
    rows = -(-n // columns)
    fig, grid = plt.subplots(
        rows, columns, figsize=(columns * panel[0], rows * panel[1]), squeeze=False, **subplot_kw
    )
    for ax in grid.flat[n:]:
        fig.delaxes(ax)
    return fig, list(grid.flat[:n])


def iteration_axis(ax: plt.Axes, label: str = r"iteration $k$") -> None:
    """Logarithmic iteration axis that still shows ``k = 0`` (symlog, linear below 1)."""
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.3)
    ax.set_xlim(left=0)
    ax.set_xlabel(label)


def dims_text(dims: Sequence[int]) -> str:
    """The layer dimensions ``d_0, ..., d_N`` as math text for a title or a label.

    ``"$d_0 = \\dots = d_N = 8$"`` when all are equal, else ``"$(d_0, \\dots, d_N) = (8, 6, 8)$"``.
    """
    dims = [int(d) for d in dims]
    if not dims:
        raise ValueError("no layer dimensions given")
    if len(set(dims)) == 1:
        if len(dims) == 1:
            return rf"$d_0 = {dims[0]}$"
        middle = r" = \dots" if len(dims) > 2 else ""
        return rf"$d_0{middle} = d_N = {dims[0]}$"
    return r"$(d_0, \dots, d_N) = (" + ", ".join(str(d) for d in dims) + ")$"


def loss_axes(ax: plt.Axes, ylabel: str = r"loss $L^N(W(k))$") -> None:
    """Log–log axes for a loss against iterations."""
    iteration_axis(ax)
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)


def theory_line(
    ax: plt.Axes, value: float, label: str | None = None, color: str = "0.35", **kwargs
) -> None:
    """A dashed horizontal line at a theoretical value, labelled at the right edge."""
    ax.axhline(value, color=color, linestyle="--", linewidth=1.0, zorder=1, **kwargs)
    if label:
        ax.annotate(
            label,
            xy=(1.0, value),
            xycoords=("axes fraction", "data"),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize="small",
            color=color,
        )


def band(
    ax: plt.Axes,
    x: np.ndarray,
    values: np.ndarray,
    quantiles: tuple[float, float] = (0.1, 0.9),
    label: str | None = None,
    color=None,
) -> None:
    """Median line and a shaded quantile band of ``values`` (shape ``(len(x), B)``) over starts."""
    values = np.asarray(values, dtype=np.float64)
    lo, med, hi = np.nanquantile(values, [quantiles[0], 0.5, quantiles[1]], axis=1)
    (line,) = ax.plot(x, med, label=label, color=color)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0)


def save_figure(fig: plt.Figure, name: str, directory: str | Path = "figures") -> None:
    """Write ``fig`` as ``<directory>/<name>.png`` (at twice ``figure.dpi``, as the book shows
    it) and ``<directory>/<name>.svg``; in a Jupyter kernel, show that PNG and close ``fig``,
    so that the inline backend does not draw it a third time.

    Returns nothing, so a call can end a notebook cell without printing a value.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=2 * fig.dpi)
    (directory / f"{name}.png").write_bytes(png.getvalue())
    fig.savefig(directory / f"{name}.svg", metadata={"Date": None})
    if _in_kernel():
        from IPython.display import Image, display

        display(Image(png.getvalue(), retina=True))
        plt.close(fig)
