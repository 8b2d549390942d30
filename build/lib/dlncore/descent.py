"""Gradient descent ``W_j(k+1) = W_j(k) − η_k ∇_{W_j} L^N(W(k))``, batched over starts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from dlncore.iterates import Iterates
from dlncore.metrics import BUILTIN_METRICS, MetricSpec
from dlncore.network import batch_size
from dlncore.problem import Problem
from dlncore.recorder import Recorder, check_steps, geometric_grid, record_grid
from dlncore.results import Run

StepSize = float | np.ndarray | Callable[[int], float | np.ndarray]

#: Largest width for which :func:`gd` takes the compiled step (``benchmarks/bench_step.py``).
COMPILED_MAX_WIDTH = 32

__all__ = [
    "BUILTIN_METRICS",
    "COMPILED_MAX_WIDTH",
    "compiled_step_applies",
    "gd",
    "geometric_grid",
    "step_schedule",
]


def _check_eta(eta: np.ndarray, where: str) -> np.ndarray:
    if not np.all(np.isfinite(eta)) or not np.all(eta > 0):
        bad = np.asarray(eta).ravel()
        bad = bad[~(np.isfinite(bad) & (bad > 0))][0]
        raise ValueError(f"step sizes must be positive and finite; got {bad!r} {where}")
    return eta


def step_schedule(
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


def compiled_step_applies(weights: Sequence[np.ndarray], step_size: StepSize) -> bool:
    """Whether :func:`gd` takes the compiled step (:mod:`dlncore.compiled`): one float64 chain
    of widths ``≤`` :data:`COMPILED_MAX_WIDTH` and a constant step size (a number)."""
    return (
        weights[0].ndim == 2
        and all(w.dtype == np.float64 for w in weights)
        and max(max(w.shape) for w in weights) <= COMPILED_MAX_WIDTH
        and not callable(step_size)
        and np.ndim(step_size) == 0
    )


def gd(
    problem: Problem,
    weights: Sequence[np.ndarray],
    step_size: StepSize,
    steps: int,
    *,
    record: int | Sequence[int] = 200,
    metrics: MetricSpec = (),
    extrema: Mapping[str, Callable[[Iterates], np.ndarray]] | None = None,
    blowup: float = 1e6,
    progress: bool | str = False,
    engine: str = "auto",
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
    extrema : mapping, optional
        ``{name: f}`` with ``f(it) -> array`` (one value per start) of the
        :class:`~dlncore.iterates.Iterates` ``it`` (``it.k``, ``it.weights``, ``it.loss``,
        ``it.descent`` (the step's descent margin), ``it.descent_min``, ``it.active``, ...):
        the smallest and largest value over EVERY iteration ``0..steps`` go into
        ``Run.extrema[name]`` (``[min, max]``, NaN ignored) without recording every iteration.
    blowup : float
        A start diverges when its loss exceeds ``blowup · max(L(0), ½‖Y‖²)`` or is not finite;
        it is then frozen at the weights where that happened and flagged in the result.
    progress : bool or str
        Show a tqdm progress bar (a string is used as its label).
    engine : {"auto", "numpy", "compiled"}
        The step: numpy, or compiled (:mod:`dlncore.compiled`), which applies to one float64
        chain of widths ``≤ 32`` with a constant step (:func:`compiled_step_applies`);
        ``"auto"`` takes the compiled step where it applies. The two agree to rounding.

    Returns
    -------
    Run
        Recorded losses and metrics, final weights, and per-start divergence flags.
    """
    if engine not in ("auto", "numpy", "compiled"):
        raise ValueError(f"engine must be 'auto', 'numpy' or 'compiled', got {engine!r}")
    steps = check_steps(steps)
    ws = problem.check(weights)
    start = [w.copy() for w in ws]
    eta_of = step_schedule(step_size, steps, batch_size(ws), problem.dtype)
    if not (np.isfinite(blowup) and blowup > 1):
        raise ValueError(f"blowup must be a finite number > 1, got {blowup!r}")
    recorder = Recorder(
        record_grid(record, steps),
        metrics,
        start,
        loss=problem.loss,
        progress=progress,
        extrema=extrema,
    )
    l0 = np.asarray(problem.loss(ws, exact=False))
    threshold = blowup * np.maximum(l0, 0.5 * problem.y_norm2)
    step, compiled = problem.loss_and_gradients, None  # the step folded into the backward pass
    if engine != "numpy" and compiled_step_applies(ws, step_size):
        from dlncore.compiled import CompiledChain  # imports numba: only when used

        chain = CompiledChain(problem.sxx, problem.syx, problem.y_norm2, ws, float(eta_of(0)))
        ws, step, compiled = chain.weights, chain.step, chain.advance
    elif engine == "compiled":
        raise ValueError(
            "the compiled step needs one float64 chain of widths "
            f"<= {COMPILED_MAX_WIDTH} and a constant step size"
        )
    it = Iterates(step, ws, eta_of, steps, threshold, compiled=compiled)
    recorder.follow(it)
    return recorder.run(it, "gd", batch=it.batch, dtype=str(problem.dtype))
