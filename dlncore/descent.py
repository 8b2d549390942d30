"""Gradient descent ``W_j(k+1) = W_j(k) − η_k ∇_{W_j} L^N(W(k))``, batched over starts."""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from tqdm.std import tqdm  # text bars: no ipywidgets needed

from dlncore import metrics as _m
from dlncore.network import Weights, batch_size
from dlncore.problem import Problem
from dlncore.results import Run

StepSize = float | np.ndarray | Callable[[int], float | np.ndarray]
MetricSpec = Sequence[str] | Mapping[str, Callable[[Weights], np.ndarray]]

#: Metrics that :func:`gd` can record by name.
BUILTIN_METRICS = (
    "grad_norm",
    "step_length",
    "path_length",
    "imbalance",
    "imbalance_drift",
    "max_factor_norm",
    "end_to_end_norm",
    "singular_values",
    "numerical_rank",
    "effective_rank",
)


def geometric_grid(steps: int, num: int = 200) -> np.ndarray:
    """About ``num`` geometrically spaced iterations in ``0..steps``, with 0 and ``steps``."""
    steps = _check_steps(steps)
    if num < 2:
        raise ValueError(f"a grid needs at least 2 points, got num = {num}")
    if steps == 0:
        return np.array([0])
    inner = np.rint(np.geomspace(1, steps, num - 1)).astype(np.int64)
    return np.unique(np.concatenate([[0], inner, [steps]]))


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer):
        raise ValueError(f"steps must be an integer, got {steps!r}")
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    return int(steps)


def _check_eta(eta: np.ndarray, where: str) -> np.ndarray:
    if not np.all(np.isfinite(eta)) or not np.all(eta > 0):
        bad = np.asarray(eta).ravel()
        bad = bad[~(np.isfinite(bad) & (bad > 0))][0]
        raise ValueError(f"step sizes must be positive and finite; got {bad!r} {where}")
    return eta


def _step_sizes(
    step_size: StepSize, steps: int, batch: int | None, dtype: np.dtype
) -> Callable[[int], np.ndarray]:
    """Return ``k -> η_k`` (a scalar, or shape ``(B, 1, 1)`` for per-start step sizes).

    ``step_size`` is a number (constant step), a callable ``k -> η_k`` (number or ``(B,)``),
    or an array broadcastable to ``(steps,)`` or ``(steps, B)``: ``(steps,)`` is a schedule,
    ``(1, B)`` one constant step per start, ``(steps, B)`` a schedule per start.
    """
    shape = (1, 1) if batch is None else (batch, 1, 1)

    def per_start(eta: np.ndarray, where: str) -> np.ndarray:
        eta = np.asarray(eta, dtype=dtype)
        if eta.ndim == 0:
            return _check_eta(eta, where)
        if batch is None or eta.shape != (batch,):
            raise ValueError(
                f"step size {where} has shape {eta.shape}; expected a number"
                + ("" if batch is None else f" or one per start, shape ({batch},)")
            )
        return _check_eta(eta, where).reshape(shape)

    if callable(step_size):
        return lambda k: per_start(step_size(k), f"at iteration {k}")
    eta = np.asarray(step_size, dtype=np.float64)
    if eta.ndim == 0:
        const = per_start(eta, "")
        return lambda k: const
    if eta.ndim > 2 or eta.shape[0] not in (1, steps) or (eta.ndim == 2 and batch is None):
        raise ValueError(
            f"step-size array of shape {eta.shape} does not broadcast to (steps,) = ({steps},)"
            + ("" if batch is None else f" or (steps, B) = ({steps}, {batch})")
        )
    if eta.ndim == 2 and eta.shape[1] not in (1, batch):
        raise ValueError(f"step-size array of shape {eta.shape}: second axis must be B = {batch}")
    _check_eta(eta, "in the step-size array")
    if eta.ndim == 1:
        table = eta.astype(dtype)
        return lambda k: table[k if table.shape[0] > 1 else 0]
    table = np.broadcast_to(eta, (eta.shape[0], batch)).astype(dtype)
    rows = table.shape[0]
    return lambda k: table[k if rows > 1 else 0].reshape(shape)


def _metric_functions(
    problem: Problem, metrics: MetricSpec, start: Weights
) -> dict[str, Callable[[Weights], np.ndarray]]:
    if isinstance(metrics, Mapping):
        return dict(metrics)
    simple = {
        "imbalance": _m.imbalance,
        "imbalance_drift": lambda w: _m.imbalance_drift(w, start),
        "max_factor_norm": _m.max_factor_norm,
        "end_to_end_norm": _m.end_to_end_norm,
        "singular_values": _m.singular_values,
        "numerical_rank": _m.numerical_rank,
        "effective_rank": _m.effective_rank,
    }
    out = {}
    for name in metrics:
        if name not in BUILTIN_METRICS:
            raise ValueError(f"unknown metric {name!r}; known: {', '.join(BUILTIN_METRICS)}")
        if name in simple:
            out[name] = simple[name]
    return out


def gd(
    problem: Problem,
    weights: Sequence[np.ndarray],
    step_size: StepSize,
    steps: int,
    *,
    record: int | Sequence[int] = 200,
    metrics: MetricSpec = (),
    blowup: float = 1e6,
    progress: bool | str = False,
) -> Run:
    """Run gradient descent on ``L^N`` from ``weights``.

    Parameters
    ----------
    problem : Problem
    weights : list of arrays
        Start ``[W_1(0), ..., W_N(0)]``, each ``(d_j, d_{j−1})`` or ``(B, d_j, d_{j−1})`` for
        ``B`` independent starts run at once.
    step_size : float, array or callable
        Constant ``η``; a callable ``k -> η_k`` (a number or one per start, shape ``(B,)``); or
        an array broadcastable to ``(steps,)`` / ``(steps, B)`` (``(1, B)``: a constant step
        per start). Every ``η_k`` must be positive and finite.
    steps : int
        Number of GD steps (``≥ 0``).
    record : int or sequence of int
        Number of points of a geometric grid of iterations (always with 0 and ``steps``), or
        the iterations themselves.
    metrics : sequence of str or mapping
        Names from :data:`BUILTIN_METRICS`, or ``{name: f}`` with ``f(weights) -> array``.
    blowup : float
        A start diverges when its loss exceeds ``blowup · max(L(0), ½‖Y‖²)`` or is not finite;
        it is then frozen at the weights where that happened and flagged in the result.
    progress : bool or str
        Show a tqdm progress bar (a string is used as its label).

    Returns
    -------
    Run
        Recorded losses and metrics, final weights, and per-start divergence flags.
    """
    steps = _check_steps(steps)
    ws = problem.check(weights)
    start = [w.copy() for w in ws]
    batch = batch_size(ws)
    eta_of = _step_sizes(step_size, steps, batch, problem.dtype)
    if not (np.isfinite(blowup) and blowup > 1):
        raise ValueError(f"blowup must be a finite number > 1, got {blowup!r}")
    if isinstance(record, int | np.integer):
        grid = geometric_grid(steps, int(record))
    else:
        grid = np.unique(np.asarray(record, dtype=np.int64))
        if grid.size == 0 or grid[0] < 0 or grid[-1] > steps:
            raise ValueError(f"record iterations must lie in 0..{steps}")
    names = list(metrics) if not isinstance(metrics, Mapping) else list(metrics.keys())
    funcs = _metric_functions(problem, metrics, start)
    need_path = "path_length" in names
    grid_list = grid.tolist()

    bshape = () if batch is None else (batch,)

    def per_start(eta: np.ndarray) -> np.ndarray:  # η as a 0-d array, or one per start (B,)
        eta = np.asarray(eta, dtype=np.float64)
        return eta.reshape(()) if batch is None else np.broadcast_to(eta.reshape(-1), bshape)

    l0 = np.asarray(problem.loss(ws, exact=False))
    threshold = blowup * np.maximum(l0, 0.5 * problem.y_norm2)
    active = np.ones(bshape, dtype=bool)
    diverged_at = np.full(bshape, -1, dtype=np.int64)
    diverged_loss = np.full(bshape, np.nan)
    t_now = np.zeros(() if batch is None else (batch, 1, 1))  # Σ_{i<k} η_i, shaped like η
    all_diverged = False
    path = np.zeros(bshape)
    rec_iter, rec_time, rec_loss = [], [], []
    rec_metrics: dict[str, list] = {name: [] for name in names}
    pending_records = iter(grid_list[1:] + [-1])
    next_rec = grid_list[0]  # next iteration to record (-1: none left)
    bar = None
    if progress:
        bar = tqdm(total=steps, desc=progress if isinstance(progress, str) else "gd", leave=False)
    chunk = max(1, steps // 200)
    one = np.ones((), dtype=problem.dtype)
    began = _time.perf_counter()

    with np.errstate(all="ignore"):
        for k in range(steps + 1):
            eta = eta_of(k) if k < steps else one
            if batch is not None and not active.all():
                eta = eta * active.reshape(-1, 1, 1)
            # moves[j] = η_k ∇_{W_j} L(W(k)): the step is folded into the backward pass
            loss, moves = problem.loss_and_gradients(ws, eta)
            ok = loss <= threshold
            if not (ok if batch is None else ok.all()):
                newly = active & ~ok
                diverged_at[newly] = k
                diverged_loss[newly] = np.where(np.isfinite(loss), loss, np.inf)[newly]
                active = active & ok
                all_diverged = not active.any()
                for move in moves:  # frozen starts do not move (even if their gradient overflowed)
                    move[~active] = 0.0
            stop = k == steps or all_diverged
            record_now = k == next_rec
            if record_now or stop or need_path:
                move2 = sum(np.sum(m.astype(np.float64) ** 2, axis=(-2, -1)) for m in moves)
                step_length = np.sqrt(move2)
            if record_now or stop:
                exact = np.asarray(problem.loss(ws))
                rec_iter.append(k)
                rec_time.append(per_start(t_now).copy())
                rec_loss.append(np.where(active | (diverged_at == k), exact, np.nan))
                eta_now = per_start(eta)
                for name in names:
                    if name == "grad_norm":
                        value = step_length / np.where(eta_now > 0, eta_now, np.inf)
                    elif name == "path_length":
                        value = path.copy()
                    elif name == "step_length":
                        value = step_length if k < steps else np.zeros(bshape)
                    else:
                        value = np.asarray(funcs[name](ws), dtype=np.float64)
                    rec_metrics[name].append(value)
                next_rec = next(pending_records)
            if stop:
                break
            for w, move in zip(ws, moves, strict=True):
                w -= move
            t_now += eta
            if need_path:
                path += step_length
            if bar is not None and (k + 1) % chunk == 0:
                bar.update(chunk)
    if bar is not None:
        bar.close()

    return Run(
        iterations=np.array(rec_iter, dtype=np.int64),
        time=np.array(rec_time),
        loss=np.array(rec_loss),
        metrics={name: np.array(v) for name, v in rec_metrics.items()},
        weights=ws,
        diverged=diverged_at >= 0,
        diverged_at=diverged_at,
        diverged_loss=diverged_loss,
        info={
            "kind": "gd",
            "steps": int(rec_iter[-1]),
            "requested_steps": steps,
            "widths": [ws[0].shape[-1]] + [w.shape[-2] for w in ws],
            "batch": batch,
            "dtype": str(problem.dtype),
            "seconds": _time.perf_counter() - began,
        },
    )
