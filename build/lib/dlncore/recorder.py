"""Recording a run: the iterations to record and the :class:`Recorder` that builds the Run."""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from tqdm.std import tqdm  # text bars: no ipywidgets needed

from dlncore.iterates import Iterates, move_length
from dlncore.metrics import MetricSpec, weight_metrics
from dlncore.network import Weights, widths
from dlncore.results import Run


def geometric_grid(steps: int, num: int = 200) -> np.ndarray:
    """About ``num`` geometrically spaced iterations in ``0..steps``, with 0 and ``steps``."""
    steps = check_steps(steps)
    if num < 2:
        raise ValueError(f"a grid needs at least 2 points, got num = {num}")
    if steps == 0:
        return np.array([0])
    inner = np.rint(np.geomspace(1, steps, num - 1)).astype(np.int64)
    return np.unique(np.concatenate([[0], inner, [steps]]))


def check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer):
        raise ValueError(f"steps must be an integer, got {steps!r}")
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    return int(steps)


def record_grid(record: int | Sequence[int], steps: int) -> np.ndarray:
    """The iterations to record: a geometric grid of ``record`` points, or ``record`` itself."""
    if isinstance(record, int | np.integer):
        return geometric_grid(steps, int(record))
    grid = np.unique(np.asarray(record, dtype=np.int64))
    if grid.size == 0 or grid[0] < 0 or grid[-1] > steps:
        raise ValueError(f"record iterations must lie in 0..{steps}")
    return grid


class Recorder:
    """Records losses and metrics of :class:`~dlncore.iterates.Iterates`; builds the :class:`Run`.

    Parameters
    ----------
    grid : array of int
        Iterations to record (the last visited iteration is always recorded).
    metrics : sequence of str or mapping
        As for :func:`gd`.
    start : list of arrays
        ``W(0)`` (reference of ``imbalance_drift``).
    loss : callable, optional
        ``loss(weights)`` recorded at each record; default: the iterates' own loss.
    progress : bool or str
        Show a tqdm bar (a string is its label); ``label`` is the default label.
    extrema : mapping, optional
        ``{name: f}`` with ``f(iterates) -> array``, one value per start: the smallest and
        largest value of each over EVERY iteration (NaN ignored) go into ``Run.extrema``.
        The iterates are then visited at every iteration, with descent margins tracked.
    """

    def __init__(
        self,
        grid: np.ndarray,
        metrics: MetricSpec,
        start: Weights,
        *,
        loss: Callable[[Weights], np.ndarray] | None = None,
        progress: bool | str = False,
        label: str = "gd",
        extrema: Mapping[str, Callable[[Iterates], np.ndarray]] | None = None,
    ):
        self.grid = grid
        self.names = list(metrics.keys() if isinstance(metrics, Mapping) else metrics)
        self.funcs = weight_metrics(metrics, start)
        self.loss_of = loss
        self.progress, self.label = progress, label
        self.iterations: list[int] = []
        self.time: list[np.ndarray] = []
        self.loss: list[np.ndarray] = []
        self.metrics: dict[str, list] = {name: [] for name in self.names}
        self.extremum_funcs = dict(extrema or {})
        self.extrema: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.began = _time.perf_counter()

    def stops(self, steps: int) -> list[int]:
        """The record grid, plus about 200 progress updates when a bar is shown."""
        stops = self.grid.tolist()
        if self.progress:
            stops += list(range(0, steps + 1, max(1, steps // 200)))
        return stops

    def follow(self, it: Iterates) -> Iterates:
        """Visit ``it`` until its end, recording at the grid; returns ``it``.

        Turns on the path length of ``it`` when ``path_length`` is recorded.
        """
        bar = None
        if self.progress:
            desc = self.progress if isinstance(self.progress, str) else self.label
            bar = tqdm(total=it.steps, desc=desc, leave=False)
        grid = set(self.grid.tolist())
        it.track_path = it.track_path or "path_length" in self.names
        every = bool(self.extremum_funcs)
        it.track_descent = it.track_descent or every
        for state in it.visit(None if every else self.stops(it.steps)):
            if state.k in grid or state.last:
                self.take(state)
            if every:
                self.reduce(state)
            if bar is not None:
                bar.update(state.k - bar.n)
        if bar is not None:
            bar.close()
        return it

    def take(self, it: Iterates) -> None:
        """Record the current iterate."""
        k, batch = it.k, it.batch
        bshape = () if batch is None else (batch,)

        def per_start(eta: np.ndarray) -> np.ndarray:  # η as a 0-d array, or one per start (B,)
            eta = np.asarray(eta, dtype=np.float64)
            return eta.reshape(()) if batch is None else np.broadcast_to(eta.reshape(-1), bshape)

        loss = it.loss if self.loss_of is None else np.asarray(self.loss_of(it.weights))
        self.iterations.append(k)
        self.time.append(per_start(it.time).copy())
        self.loss.append(np.where(it.active | (it.diverged_at == k), loss, np.nan))
        step_length = move_length(it.moves) if set(self.names) & {"grad_norm", "step_length"} else 0
        eta_now = per_start(it.eta)
        for name in self.names:
            if name == "grad_norm":
                value = step_length / np.where(eta_now > 0, eta_now, np.inf)
            elif name == "path_length":
                value = it.path.copy()
            elif name == "step_length":
                value = step_length if k < it.steps else np.zeros(bshape)
            else:
                value = np.asarray(self.funcs[name](it.weights), dtype=np.float64)
            self.metrics[name].append(value)

    def reduce(self, it: Iterates) -> None:
        """Update the running minima and maxima with the current iterate."""
        for name, f in self.extremum_funcs.items():
            value = np.asarray(f(it), dtype=np.float64)
            low, high = self.extrema.get(name, (value, value))
            self.extrema[name] = (np.fmin(low, value), np.fmax(high, value))

    def run(self, it: Iterates, kind: str, **info) -> Run:
        """The :class:`Run` of what was recorded; ``info`` adds to its description."""
        return Run(
            iterations=np.array(self.iterations, dtype=np.int64),
            time=np.array(self.time),
            loss=np.array(self.loss),
            metrics={name: np.array(v) for name, v in self.metrics.items()},
            weights=it.weights,
            diverged=it.diverged_at >= 0,
            diverged_at=it.diverged_at,
            diverged_loss=it.diverged_loss,
            extrema={name: np.array(pair) for name, pair in self.extrema.items()},
            info={
                "kind": kind,
                "steps": int(self.iterations[-1]),
                "requested_steps": it.steps,
                "widths": widths(it.weights),
                **info,
                "seconds": _time.perf_counter() - self.began,
            },
        )
