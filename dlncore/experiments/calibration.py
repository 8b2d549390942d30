"""Calibrating the journal experiments' unpublished choices against the published curves.

The published loss and norm curves (digitized, ``data/published/*.csv``) are compared with ours
by a :func:`distance` on a fixed grid of iterations, and by the :func:`features` that a reader
sees (drop iteration, plateau, norm extremes, final loss). A candidate (an
:class:`~dlncore.experiments.journal.Experiment`) can be screened cheaply by :func:`scaled_run`:
gradient descent at step ``c η`` for ``steps / c`` steps follows the same gradient flow up to time
``η k``, and its records are reported at the iterations ``c k'`` of the published step.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dlncore.experiments.journal import Experiment, linear_run

#: Iterations at which curves are compared: 41 log-spaced points from 10 to 10⁶.
GRID = np.geomspace(1e1, 1e6, 41)
#: Weight of the norm part of the distance: an RMS norm error of 0.01 counts as 0.1 decade.
NORM_WEIGHT = 10.0


@dataclass(frozen=True)
class Curve:
    """A loss and a norm curve of one depth, each at its own iterations (ascending)."""

    loss_k: np.ndarray
    loss: np.ndarray
    norm_k: np.ndarray
    norm: np.ndarray

    def loss_at(self, k: np.ndarray | float) -> np.ndarray:
        """Loss at iterations ``k`` (interpolated linearly in log k, log loss)."""
        return 10.0 ** np.interp(np.log10(k), np.log10(self.loss_k), np.log10(self.loss))

    def norm_at(self, k: np.ndarray | float) -> np.ndarray:
        """Norm at iterations ``k`` (interpolated linearly in log k)."""
        return np.interp(np.log10(k), np.log10(self.norm_k), self.norm)


def curve_of_run(iterations: np.ndarray, loss: np.ndarray, norm: np.ndarray) -> Curve:
    """A :class:`Curve` from recorded iterations (the record at ``k = 0`` is dropped: log axis)."""
    k = np.asarray(iterations, dtype=np.float64)
    keep = k > 0
    loss = np.asarray(loss, dtype=np.float64)[keep]
    norm = np.asarray(norm, dtype=np.float64)[keep]
    return Curve(k[keep], loss, k[keep], norm)


def _read_tidy(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out: dict[int, list[tuple[float, float]]] = {}
    with open(path) as f:
        rows = csv.reader(line for line in f if not line.startswith("#"))
        header = next(rows)
        if header != ["curve", "x", "y"]:
            raise ValueError(f"{path}: expected columns curve,x,y, got {header}")
        for name, x, y in rows:
            out.setdefault(int(name), []).append((float(x), float(y)))
    result = {}
    for depth, points in out.items():
        xy = np.array(sorted(points))
        result[depth] = (xy[:, 0], xy[:, 1])
    return result


def load_published(directory: str | Path) -> dict[int, Curve]:
    """The digitized published curves, ``{depth: Curve}``, from ``linear_loss.csv`` and
    ``linear_norms.csv`` in ``directory`` (written by ``python -m dlnbook.digitize``)."""
    directory = Path(directory)
    loss = _read_tidy(directory / "linear_loss.csv")
    norms = _read_tidy(directory / "linear_norms.csv")
    if set(loss) != set(norms):
        raise ValueError(f"{directory}: loss and norm files have different depths")
    return {n: Curve(*loss[n], *norms[n]) for n in sorted(loss)}


def distance(ours: Curve, published: Curve, grid: np.ndarray = GRID, floor: float = 1e-3):
    """``(loss part, norm part)`` of the distance between two curves on ``grid``.

    Loss part: RMS difference of ``log10 max(L, floor)`` (decades; the floor leaves out the
    round-off floors, compared separately). Norm part: RMS difference of the norms.
    The total used for ranking is ``loss part + NORM_WEIGHT · norm part``.
    """
    a = np.log10(np.maximum(ours.loss_at(grid), floor))
    b = np.log10(np.maximum(published.loss_at(grid), floor))
    d_loss = float(np.sqrt(np.mean((a - b) ** 2)))
    d_norm = float(np.sqrt(np.mean((ours.norm_at(grid) - published.norm_at(grid)) ** 2)))
    return d_loss, d_norm


def total_distance(parts: Mapping[int, tuple[float, float]]) -> float:
    """Mean over depths of ``loss part + NORM_WEIGHT · norm part``."""
    return float(np.mean([a + NORM_WEIGHT * b for a, b in parts.values()]))


def first_crossing(curve: Curve, level: float) -> float:
    """First iteration where the loss falls below ``level``, interpolated in log–log between
    the neighbouring points (``nan`` if never)."""
    k, loss = curve.loss_k, curve.loss
    below = np.flatnonzero(loss < level)
    if below.size == 0:
        return float("nan")
    i = below[0]
    if i == 0:
        return float(k[0])
    x = np.log10(k[i - 1 : i + 1])
    y = np.log10(loss[i - 1 : i + 1])
    return float(10.0 ** np.interp(np.log10(level), y[::-1], x[::-1]))


def features(curve: Curve, drop_level: float = 1e-3) -> dict[str, float]:
    """The quantities a reader compares (``nan`` where undefined).

    ``drop``: first iteration with loss below ``drop_level``; ``loss_1e3/1e4/1e5``: loss at
    those iterations; ``plateau``: the loss where the curve is flattest (smallest
    ``|d log L / d log k|``, on 60 log-spaced points) in the decade before the drop, and
    ``plateau_slope`` that slope; ``norm_min``/``norm_max`` and their iterations
    ``norm_min_k``/``norm_max_k`` (the maximum after the minimum); ``bump``: the largest rise
    of the norm above its running minimum within a factor 3 of the drop; ``final``: the
    last loss.
    """
    out: dict[str, float] = {}
    drop = first_crossing(curve, drop_level)
    out["drop"] = drop
    for k in (1e3, 1e4, 1e5):
        out[f"loss_{k:.0e}".replace("+0", "")] = float(curve.loss_at(k))
    out["plateau"] = out["plateau_slope"] = float("nan")
    if np.isfinite(drop) and drop > 10 * curve.loss_k[0]:
        ks = np.geomspace(drop / 10, drop / 1.05, 60)
        logl = np.log10(curve.loss_at(ks))
        slope = np.abs(np.gradient(logl, np.log10(ks)))
        i = int(np.argmin(slope))
        out["plateau"], out["plateau_slope"] = float(10.0 ** logl[i]), float(slope[i])
    k, norm = curve.norm_k, curve.norm
    i_min = int(np.argmin(norm))
    i_max = i_min + int(np.argmax(norm[i_min:]))
    out.update(
        norm_min=float(norm[i_min]),
        norm_min_k=float(k[i_min]),
        norm_max=float(norm[i_max]),
        norm_max_k=float(k[i_max]),
    )
    out["bump"] = float("nan")
    if np.isfinite(drop):
        ks = np.geomspace(drop / 3, min(3 * drop, k[-1]), 80)
        values = curve.norm_at(ks)
        out["bump"] = float(np.max(values - np.minimum.accumulate(values)))
    out["final"] = float(curve.loss[-1])
    return out


def scaled_run(experiment: Experiment, depth: int, factor: float = 1.0, dtype: str = "float64"):
    """GD at step ``factor · η`` for ``steps / factor`` steps, as a :class:`Curve` at the
    iterations of step ``η`` (``k = factor · k'``), and the loss at ``k = 0``.

    ``factor = 1`` is the run itself. Module-level and picklable, for
    :func:`dlncore.experiments.parallel.run_many`.
    """
    if not factor >= 1:
        raise ValueError(f"factor must be at least 1, got {factor!r}")
    steps = int(round(experiment.steps / factor))
    e = replace(experiment, step_size=experiment.step_size * factor, steps=steps)
    run = linear_run(e, depth, dtype)
    curve = curve_of_run(
        np.asarray(run.iterations) * factor, run.loss, run.metrics["end_to_end_norm"]
    )
    return curve, float(run.loss[0]), float(run.info["seconds"])
