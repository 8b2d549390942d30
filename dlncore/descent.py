"""Gradient descent ``W_j(k+1) = W_j(k) − η_k ∇_{W_j} L^N(W(k))``, batched over starts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from dlncore.iterates import Iterates, StepFunction
from dlncore.metrics import BUILTIN_METRICS, MetricSpec
from dlncore.network import Weights, batch_size
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
        Constant ``η``, a schedule, or steps per start, see :func:`step_schedule`. Every
        ``η_k`` must be positive and finite.
    steps : int
        Number of GD steps ``K ≥ 0``.
    record : int or sequence of int
        Number of points of a geometric grid of iterations (always with 0 and ``K``), or the
        iterations themselves.
    metrics : sequence of str or mapping
        Names from :data:`BUILTIN_METRICS`, or ``{name: f}`` with ``f(weights) -> array``.
    extrema : mapping, optional
        ``{name: f}``, ``f(it) -> array`` (one value per start) of the
        :class:`~dlncore.iterates.Iterates` ``it`` (``it.k``, ``it.loss``, ``it.descent``, ...):
        ``Run.extrema[name]`` is ``[min, max]`` over EVERY iteration ``0..K`` (NaN ignored).
    blowup : float
        A start diverges when its loss exceeds ``blowup · max(L(0), ½‖Y‖²)`` or is not finite;
        it is then frozen at the weights where that happened and flagged in the result.
    progress : bool or str
        Show a tqdm progress bar (a string is used as its label).
    engine : {"auto", "numpy", "compiled"}
        The step: numpy, or compiled (:mod:`dlncore.compiled`) where
        :func:`compiled_step_applies`; ``"auto"`` takes the compiled step where it applies.

    Returns
    -------
    Run
        Recorded losses and metrics, final weights, and per-start divergence flags.
    """
    steps = check_steps(steps)
    ws = problem.check(weights)
    start = [w.copy() for w in ws]
    eta_of = step_schedule(step_size, steps, batch_size(ws), problem.dtype)
    threshold = _divergence_threshold(problem, ws, blowup)
    ws, step, compiled = _choose_step(problem, ws, step_size, eta_of, engine)
    grid = record_grid(record, steps)
    recorder = Recorder(grid, metrics, start, loss=problem.loss, progress=progress, extrema=extrema)
    it = Iterates(step, ws, eta_of, steps, threshold, compiled=compiled)
    recorder.follow(it)
    return recorder.run(it, "gd", batch=it.batch, dtype=str(problem.dtype))


def _divergence_threshold(problem: Problem, weights: Weights, blowup: float) -> np.ndarray:
    """The loss above which a start diverges, ``blowup · max(L(0), ½‖Y‖²)``, shape () or (B,).

    ``L(0)`` is the covariance-form loss of ``weights`` (:meth:`Problem.loss` with
    ``exact=False``); ``blowup`` must be a finite number ``> 1``.
    """
    if not (np.isfinite(blowup) and blowup > 1):
        raise ValueError(f"blowup must be a finite number > 1, got {blowup!r}")
    l0 = np.asarray(problem.loss(weights, exact=False))
    return blowup * np.maximum(l0, 0.5 * problem.y_norm2)


def _choose_step(
    problem: Problem,
    weights: Weights,
    step_size: StepSize,
    step_sizes: Callable[[int], np.ndarray],
    engine: str,
) -> tuple[Weights, StepFunction, Callable[[Iterates, int], None] | None]:
    """The step of :func:`gd` for ``engine``: ``(weights, step, compiled)`` for :class:`Iterates`.

    ``"numpy"``: ``weights`` and the problem's loss and gradients (the step folded into the
    backward pass). ``"compiled"``: the weights, step and loop of a
    :class:`~dlncore.compiled.CompiledChain` with the constant step ``step_sizes(0)`` (an
    error where :func:`compiled_step_applies` does not hold). ``"auto"``: compiled where it
    applies, else numpy.
    """
    if engine not in ("auto", "numpy", "compiled"):
        raise ValueError(f"engine must be 'auto', 'numpy' or 'compiled', got {engine!r}")
    if engine != "numpy" and compiled_step_applies(weights, step_size):
        from dlncore.compiled import CompiledChain  # imports numba: only when used

        eta = float(step_sizes(0))
        chain = CompiledChain(problem.sxx, problem.syx, problem.y_norm2, weights, eta)
        return chain.weights, chain.step, chain.advance
    if engine == "compiled":
        raise ValueError(
            "the compiled step needs one float64 chain of widths "
            f"<= {COMPILED_MAX_WIDTH} and a constant step size"
        )
    return weights, problem.loss_and_gradients, None
