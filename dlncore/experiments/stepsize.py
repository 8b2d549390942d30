"""Empirical step-size thresholds: the largest constant step with which GD still converges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dlncore.descent import gd
from dlncore.network import repeat
from dlncore.problem import Problem


@dataclass(frozen=True)
class StepSearch:
    """Result of :func:`largest_convergent_step`.

    Attributes
    ----------
    largest : float
        Largest tried step size that converged (NaN if none did).
    smallest_failing : float
        Smallest tried step size above ``largest`` that did not converge (``inf`` if none):
        the threshold lies in ``[largest, smallest_failing)`` up to the grid resolution.
    step_sizes : array (M,)
        Every step size tried (all rounds, sorted).
    converged, diverged : bool arrays (M,)
        Outcome of each tried step size (``diverged``: the loss blew up).
    final_loss, final_grad_norm : arrays (M,)
        ``L^N`` and ``‖∇L^N‖`` after ``steps`` iterations (NaN for diverged runs).
    """

    largest: float
    smallest_failing: float
    step_sizes: np.ndarray
    converged: np.ndarray
    diverged: np.ndarray
    final_loss: np.ndarray
    final_grad_norm: np.ndarray


def _batch_outcome(
    problem: Problem,
    weights: Sequence[np.ndarray],
    etas: np.ndarray,
    steps: int,
    grad_tol: float,
    blowup: float,
) -> tuple[np.ndarray, ...]:
    """Run GD from ``weights`` with every step size in ``etas`` in one batched call."""
    batch = etas.size
    starts = repeat(weights, batch)
    run = gd(
        problem,
        starts,
        etas.reshape(1, batch),
        steps,
        record=[0, steps],
        metrics=("grad_norm",),
        blowup=blowup,
    )
    l0 = float(problem.loss(weights))
    loss, gnorm = run.loss[-1], run.metrics["grad_norm"][-1]
    diverged = np.asarray(run.diverged, dtype=bool)
    ok = ~diverged & np.isfinite(loss) & (loss <= l0) & (gnorm <= grad_tol)
    return ok, diverged, np.where(diverged, np.nan, loss), np.where(diverged, np.nan, gnorm)


def largest_convergent_step(
    problem: Problem,
    weights: Sequence[np.ndarray],
    step_sizes: Sequence[float] | np.ndarray,
    steps: int,
    *,
    grad_tol: float = 1e-6,
    refine: int = 0,
    refine_points: int = 16,
    blowup: float = 1e6,
) -> StepSearch:
    """Largest constant step size in a grid for which GD from ``weights`` converges.

    A step size counts as *convergent* when, after ``steps`` iterations, the run did not blow
    up (see :func:`gd`), the loss did not increase (``L(K) ≤ L(0)``) and the gradient is small,
    ``‖∇L^N(W(K))‖ ≤ grad_tol``: the iterate is close to a critical point. All step sizes of a
    round run as one batched :func:`gd` call.

    Parameters
    ----------
    problem : Problem
    weights : list of arrays
        One (unbatched) start ``[W_1(0), ..., W_N(0)]``.
    step_sizes : sequence of float
        Positive step sizes of the first round (any order).
    steps : int
        Iteration budget ``K`` per run.
    grad_tol : float
        Absolute tolerance on the final gradient norm.
    refine : int
        Number of refinement rounds: each tries ``refine_points`` geometrically spaced step
        sizes strictly between the current largest convergent step and the next tried step
        above it (bisection-like, batched).
    refine_points : int
        Step sizes per refinement round (``≥ 1``).
    blowup : float
        Passed to :func:`gd`.

    Returns
    -------
    StepSearch
    """
    ws = problem.check(weights)
    etas = _check_search(ws, step_sizes, refine, refine_points)
    rounds = []
    for _ in range(refine + 1):
        rounds.append((etas, *_batch_outcome(problem, ws, etas, steps, grad_tol, blowup)))
        etas = _between(rounds, refine_points)
        if etas is None:
            break
    return _step_search(rounds)


def _check_search(
    ws: Sequence[np.ndarray],
    step_sizes: Sequence[float] | np.ndarray,
    refine: int,
    refine_points: int,
) -> np.ndarray:
    """The first round's step sizes, sorted and unique, after checking the search's arguments."""
    if ws[0].ndim != 2:
        raise ValueError("weights must be a single (unbatched) start")
    etas = np.unique(np.asarray(step_sizes, dtype=np.float64).ravel())
    if etas.size == 0 or not np.all(np.isfinite(etas)) or np.any(etas <= 0):
        raise ValueError("step_sizes must be a non-empty list of positive finite numbers")
    if refine < 0 or refine_points < 1:
        raise ValueError(f"refine must be ≥ 0 and refine_points ≥ 1, got {refine}, {refine_points}")
    return etas


def _between(rounds: list[tuple[np.ndarray, ...]], points: int) -> np.ndarray | None:
    """``points`` geometrically spaced step sizes strictly between the largest convergent one
    tried in ``rounds`` and the next tried above it; None when there is no such pair."""
    tried = np.concatenate([r[0] for r in rounds])
    ok = np.concatenate([r[1] for r in rounds])
    if not ok.any():
        return None
    best = tried[ok].max()
    above = tried[tried > best]
    if above.size == 0:
        return None
    return np.geomspace(best, above.min(), points + 2)[1:-1]


def _step_search(rounds: list[tuple[np.ndarray, ...]]) -> StepSearch:
    """The :class:`StepSearch` of the rounds ``(etas, converged, diverged, loss, grad_norm)``."""
    etas, ok, diverged, loss, gnorm = (np.concatenate(c) for c in zip(*rounds, strict=True))
    order = np.argsort(etas, kind="stable")
    etas, ok = etas[order], ok[order]
    largest = float(etas[ok].max()) if ok.any() else float("nan")
    failing = etas[~ok & (etas > (largest if ok.any() else -np.inf))]
    return StepSearch(
        largest=largest,
        smallest_failing=float(failing.min()) if failing.size else float("inf"),
        step_sizes=etas,
        converged=ok,
        diverged=diverged[order],
        final_loss=loss[order],
        final_grad_norm=gnorm[order],
    )


def per_layer_factors(depths: Sequence[int], values: Sequence[float]) -> tuple[np.ndarray, float]:
    """How a quantity changes per added layer: between consecutive depths, and on average.

    Parameters
    ----------
    depths : sequence of int, shape (D,)
        Increasing depths N.
    values : sequence of float, shape (D,)
        The quantity at each depth (e.g. a step size).

    Returns
    -------
    tuple of (array of shape (D - 1,), float)
        ``(v[i+1] / v[i]) ** (1 / (N[i+1] - N[i]))`` for consecutive depths, and the geometric
        mean per layer from the first depth to the last, ``(v[-1] / v[0]) ** (1 / (N[-1] −
        N[0]))`` (``nan`` for fewer than two depths).
    """
    n, v = np.asarray(depths, dtype=float), np.asarray(values, dtype=float)
    factors = (v[1:] / v[:-1]) ** (1 / np.diff(n))
    mean = float((v[-1] / v[0]) ** (1 / (n[-1] - n[0]))) if n.size > 1 else np.nan
    return factors, mean


def decays_at_least_exponentially(
    depths: Sequence[int], values: Sequence[float], rtol: float = 1e-9
) -> bool:
    """Whether positive ``values`` fall at least exponentially in the depth over ``depths``.

    Every factor per added layer must be below 1, and the average factor per layer over the
    deeper half of the depths (from the median depth to the last) must not exceed the one over
    the shallower half (first to median), up to ``rtol``: an exponential ``c·a^N`` has equal
    halves, a faster decay a smaller second half, while a polynomial ``N^{-p}`` has factors
    ``(N/(N+1))^p`` that grow toward 1 and fails. Fewer than three depths cannot show this.

    Parameters
    ----------
    depths : sequence of int, shape (D,)
        Increasing depths N.
    values : sequence of float, shape (D,)
        The quantity at each depth.

    Returns
    -------
    bool
        ``False`` also when a value is not finite and positive or ``D < 3``.
    """
    n, v = np.asarray(depths, dtype=float), np.asarray(values, dtype=float)
    if n.size < 3 or not np.all(np.isfinite(v) & (v > 0)):
        return False
    factors, _ = per_layer_factors(n, v)
    mid = n.size // 2
    shallow = (v[mid] / v[0]) ** (1 / (n[mid] - n[0]))
    deep = (v[-1] / v[mid]) ** (1 / (n[-1] - n[mid]))
    return bool(np.all(factors < 1) and deep <= shallow * (1 + rtol))
