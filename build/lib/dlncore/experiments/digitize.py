"""Digitize line plots from a PNG: read the curves of a published figure as numbers.

The axes are calibrated from the pixel positions of grid lines or tick marks, whose data values
the user names (in order, left to right / bottom to top); each curve is the set of pixels of
one line colour; the legend box (found by its frame colour) is masked. It made chapter 7's
package data (``data/published/*.csv``, each header gives the command). Run as::

    python -m dlncore.experiments.digitize FIGURE.png \\
        --x-values 1,10,100 --x-scale log --x-from grid \\
        --y-values 1e-6,1e-4,1e-2,1,100 --y-scale log --y-from grid \\
        --curve "N = 2=#1f77b4" --curve "N = 3=#ff7f0e" --source "https://..." -o out.csv

The output is tidy CSV (``curve,x,y``, one row per pixel column a curve is visible in) after
``#`` comment lines naming the source. Pixels where a curve is hidden (by another curve drawn
on top of it, or by the legend) give no row.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb
from PIL import Image

#: Colour of a default matplotlib legend frame (edge 0.8 grey at alpha 0.8 over white).
LEGEND_EDGE = "#d6d6d6"
#: Colour of default matplotlib grid lines.
GRID = "#b0b0b0"


class DigitizeError(ValueError):
    """The image does not look like the figure described by the arguments."""


def read_image(path: str | Path) -> np.ndarray:
    """RGB values in ``[0, 1]``, shape ``(height, width, 3)``, alpha composited on white."""
    with Image.open(path) as im:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float64) / 255.0
    alpha = rgba[..., 3:]
    return rgba[..., :3] * alpha + (1.0 - alpha)


def _runs(indices: np.ndarray) -> list[np.ndarray]:
    """Split sorted integer indices into runs of consecutive values."""
    if indices.size == 0:
        return []
    return np.split(indices, np.flatnonzero(np.diff(indices) > 1) + 1)


def _close(image: np.ndarray, color: str, tol: float) -> np.ndarray:
    return np.abs(image - np.asarray(to_rgb(color))).max(axis=-1) <= tol


@dataclass(frozen=True)
class Frame:
    """Pixel bounds of the axes box (the spines): rows ``top..bottom``, columns ``left..right``."""

    top: int
    bottom: int
    left: int
    right: int


def find_frame(image: np.ndarray, dark: float = 0.3) -> Frame:
    """The axes box: the outermost dark rows and columns spanning at least half the image."""
    mask = image.max(axis=-1) < dark
    h, w = mask.shape
    rows = np.flatnonzero(mask.sum(axis=1) > 0.5 * w)
    cols = np.flatnonzero(mask.sum(axis=0) > 0.5 * h)
    if rows.size < 2 or cols.size < 2:
        raise DigitizeError("no axes box found (no dark lines spanning half the image)")
    return Frame(int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1]))


def _centres(profile: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """Weighted centres of the runs of ``selected`` indices, weights from ``profile``."""
    return np.array([np.average(r, weights=profile[r]) for r in _runs(selected)])


def grid_positions(
    image: np.ndarray, frame: Frame, axis: str, color: str = GRID, tol: float = 0.06
) -> np.ndarray:
    """Pixel positions (centres) of grid lines inside the frame, ``axis`` ``"x"`` (vertical
    lines, column positions) or ``"y"`` (horizontal lines, row positions), ascending."""
    inner = image[frame.top + 2 : frame.bottom - 1, frame.left + 2 : frame.right - 1]
    mask = _close(inner, color, tol)
    along = 0 if axis == "x" else 1
    share = mask.mean(axis=along)
    offset = frame.left + 2 if axis == "x" else frame.top + 2
    return _centres(share, np.flatnonzero(share > 0.3)) + offset


def tick_positions(image: np.ndarray, frame: Frame, axis: str, dark: float = 0.5) -> np.ndarray:
    """Pixel positions (centres) of the tick marks outside the left (``axis="y"``, rows) or the
    bottom (``axis="x"``, columns) spine: dark pixels within 3 pixels of the spine."""
    gray = image.mean(axis=-1)
    if axis == "y":
        strip = gray[frame.top : frame.bottom + 1, frame.left - 4 : frame.left - 1]
        darkness = (1.0 - strip).max(axis=1)
        offset = frame.top
    else:
        strip = gray[frame.bottom + 2 : frame.bottom + 5, frame.left : frame.right + 1]
        darkness = (1.0 - strip).max(axis=0)
        offset = frame.left
    return _centres(darkness, np.flatnonzero(darkness > 1.0 - dark)) + offset


@dataclass(frozen=True)
class Axis:
    """Affine map ``pixel = a + b · t(value)`` with ``t = log10`` or the identity."""

    a: float
    b: float
    log: bool
    residual: float  # largest calibration misfit, pixels

    def to_value(self, pixel: np.ndarray) -> np.ndarray:
        t = (np.asarray(pixel, dtype=np.float64) - self.a) / self.b
        return 10.0**t if self.log else t


def calibrate(pixels: Sequence[float], values: Sequence[float], log: bool, name: str) -> Axis:
    """Least-squares affine map from the named values to the detected pixel positions.

    Raises :class:`DigitizeError` if the counts differ or a position misses the fit by more
    than a pixel (the values do not belong to these lines)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if pixels.size != values.size:
        raise DigitizeError(
            f"{name}: found {pixels.size} reference lines at pixels "
            f"{np.round(pixels, 1).tolist()}, but {values.size} values were given"
        )
    if values.size < 2:
        raise DigitizeError(f"{name}: at least two reference values are needed")
    if log and np.any(values <= 0):
        raise DigitizeError(f"{name}: values of a log axis must be positive")
    t = np.log10(values) if log else values
    b, a = np.polyfit(t, pixels, 1)
    residual = float(np.max(np.abs(a + b * t - pixels)))
    if residual > 1.0:
        raise DigitizeError(f"{name}: calibration misfit {residual:.2f} px (> 1 px)")
    return Axis(float(a), float(b), log, residual)


def legend_box(
    image: np.ndarray, frame: Frame, color: str = LEGEND_EDGE, tol: float = 3 / 255
) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` of the legend frame inside the axes, or ``None``."""
    inner = image[frame.top + 1 : frame.bottom, frame.left + 1 : frame.right]
    mask = _close(inner, color, tol)
    rows = np.flatnonzero(mask.sum(axis=1) > 20)
    cols = np.flatnonzero(mask.sum(axis=0) > 20)
    if rows.size < 2 or cols.size < 2:
        return None
    return (
        int(rows[0]) + frame.top + 1,
        int(rows[-1]) + frame.top + 1,
        int(cols[0]) + frame.left + 1,
        int(cols[-1]) + frame.left + 1,
    )


def curve_pixels(
    image: np.ndarray, frame: Frame, color: str, mask: np.ndarray | None = None, min_share=0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel columns and (sub-pixel) rows of the curve drawn in ``color``.

    A pixel belongs to the curve if it lies on the segment from white to ``color`` at least
    ``min_share`` of the way (anti-aliased edges count with their share). In each column the
    longest run of such pixels gives the row (share-weighted centre).
    """
    c = np.asarray(to_rgb(color))
    inner = image[frame.top + 1 : frame.bottom, frame.left + 1 : frame.right]
    white = np.ones(3)
    direction = c - white
    share = ((inner - white) @ direction) / (direction @ direction)
    off_line = np.linalg.norm(inner - (white + share[..., None] * direction), axis=-1)
    ok = (share >= min_share) & (off_line < 0.08)
    if mask is not None:
        ok &= ~mask[frame.top + 1 : frame.bottom, frame.left + 1 : frame.right]
    columns, rows = [], []
    for j in range(ok.shape[1]):
        runs = _runs(np.flatnonzero(ok[:, j]))
        if not runs:
            continue
        run = max(runs, key=len)
        lo, hi = max(run[0] - 1, 0), min(run[-1] + 1, ok.shape[0] - 1)
        idx = np.arange(lo, hi + 1)
        weights = np.clip(share[idx, j], 0.0, 1.0)
        rows.append(np.average(idx, weights=weights) + frame.top + 1)
        columns.append(j + frame.left + 1)
    return np.asarray(columns, dtype=np.float64), np.asarray(rows, dtype=np.float64)


def digitize(
    image: np.ndarray,
    curves: dict[str, str],
    x_values: Sequence[float],
    y_values: Sequence[float],
    *,
    x_log: bool = True,
    y_log: bool = True,
    x_from: str = "grid",
    y_from: str = "grid",
    legend: bool = True,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Data coordinates ``(x, y)`` of each named curve (name -> colour) of a line plot.

    ``x_values``/``y_values`` are the data values of the reference lines (``"grid"`` lines or
    ``"ticks"``), in increasing pixel order for x and decreasing pixel order (bottom to top)
    for y. Returns ``{name: (x, y)}`` sorted by ``x``.
    """
    frame = find_frame(image)
    refs = {"grid": grid_positions, "ticks": tick_positions}
    if x_from not in refs or y_from not in refs:
        raise DigitizeError("reference lines are 'grid' or 'ticks'")
    xpix = refs[x_from](image, frame, "x")
    ypix = refs[y_from](image, frame, "y")[::-1]  # bottom to top
    xaxis = calibrate(xpix, x_values, x_log, "x axis")
    yaxis = calibrate(ypix, y_values, y_log, "y axis")
    mask = None
    if legend and (box := legend_box(image, frame)) is not None:
        top, bottom, left, right = box
        mask = np.zeros(image.shape[:2], dtype=bool)
        mask[top - 2 : bottom + 3, left - 2 : right + 3] = True
    out = {}
    for name, color in curves.items():
        cols, rows = curve_pixels(image, frame, color, mask)
        if cols.size == 0:
            raise DigitizeError(f"no pixels of colour {color} ({name}) found")
        out[name] = (xaxis.to_value(cols), yaxis.to_value(rows))
    return out


def write_csv(
    path: str | Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], header: Sequence[str]
) -> None:
    """Tidy CSV ``curve,x,y`` after ``#`` comment lines ``header``; written atomically."""
    path = Path(path)
    lines = [f"# {h}" for h in header] + ["curve,x,y"]
    for name, (x, y) in curves.items():
        lines += [f"{name},{a:.6g},{b:.6g}" for a, b in zip(x, y, strict=True)]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def read_csv(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Curves written by :func:`write_csv`: ``{name: (x, y)}``."""
    rows: dict[str, list[tuple[float, float]]] = {}
    with open(path) as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    if not lines or lines[0] != "curve,x,y":
        raise ValueError(f"{path}: not a digitized curve file (header 'curve,x,y' missing)")
    for ln in lines[1:]:
        name, x, y = ln.rsplit(",", 2)
        rows.setdefault(name, []).append((float(x), float(y)))
    return {k: (np.array([a for a, _ in v]), np.array([b for _, b in v])) for k, v in rows.items()}


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from None


def _curve(text: str) -> tuple[str, str]:
    name, sep, color = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=COLOUR, got {text!r}")
    try:
        to_rgb(color)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a colour: {color!r}") from None
    return name, color


def command_line(argv: Sequence[str] | None, image: Path) -> str:
    """The full command that made a CSV (shell-quoted; the image by its file name and the
    output option left out, so that the header does not depend on local paths)."""
    words = list(sys.argv[1:] if argv is None else argv)
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in ("-o", "--output"):
            skip = True
        elif not word.startswith(("-o", "--output=")):
            kept.append(image.name if word == str(image) else word)
    return "python -m dlncore.experiments.digitize " + shlex.join(kept)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m dlncore.experiments.digitize", description=__doc__.split("\n")[0]
    )
    p.add_argument("image", type=Path)
    p.add_argument(
        "--x-values", type=_floats, required=True, help="values of the x reference lines"
    )
    p.add_argument(
        "--y-values", type=_floats, required=True, help="values of the y reference lines"
    )
    p.add_argument("--x-scale", choices=("log", "linear"), default="log")
    p.add_argument("--y-scale", choices=("log", "linear"), default="log")
    p.add_argument("--x-from", choices=("grid", "ticks"), default="grid")
    p.add_argument("--y-from", choices=("grid", "ticks"), default="grid")
    p.add_argument("--curve", type=_curve, action="append", required=True, help="NAME=COLOUR")
    p.add_argument("--source", action="append", default=[], help="header line naming the source")
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        image = read_image(args.image)
        curves = digitize(
            image,
            dict(args.curve),
            args.x_values,
            args.y_values,
            x_log=args.x_scale == "log",
            y_log=args.y_scale == "log",
            x_from=args.x_from,
            y_from=args.y_from,
        )
    except (OSError, DigitizeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    header = [*args.source, f"digitized with: {command_line(argv, args.image)}"]
    write_csv(args.output, curves, header)
    print(f"{args.output}: " + ", ".join(f"{k} {v[0].size} points" for k, v in curves.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
