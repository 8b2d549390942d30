"""Empirical step-size thresholds: the largest constant step with which GD still converges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dlncore.descent import gd
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
    starts = [np.broadcast_to(w, (batch, *w.shape)).copy() for w in weights]
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
    if ws[0].ndim != 2:
        raise ValueError("weights must be a single (unbatched) start")
    etas = np.unique(np.asarray(step_sizes, dtype=np.float64).ravel())
    if etas.size == 0 or not np.all(np.isfinite(etas)) or np.any(etas <= 0):
        raise ValueError("step_sizes must be a non-empty list of positive finite numbers")
    if refine < 0 or refine_points < 1:
        raise ValueError(f"refine must be ≥ 0 and refine_points ≥ 1, got {refine}, {refine_points}")
    tried, conv, div, fl, fg = [], [], [], [], []
    for round_ in range(refine + 1):
        ok, d, loss, gnorm = _batch_outcome(problem, ws, etas, steps, grad_tol, blowup)
        tried.append(etas)
        conv.append(ok)
        div.append(d)
        fl.append(loss)
        fg.append(gnorm)
        all_etas = np.concatenate(tried)
        all_ok = np.concatenate(conv)
        if round_ == refine or not all_ok.any():
            break
        best = all_etas[all_ok].max()
        above = all_etas[all_etas > best]
        if above.size == 0:
            break
        etas = np.geomspace(best, above.min(), refine_points + 2)[1:-1]
    order = np.argsort(np.concatenate(tried), kind="stable")
    all_etas = np.concatenate(tried)[order]
    all_ok = np.concatenate(conv)[order]
    largest = float(all_etas[all_ok].max()) if all_ok.any() else float("nan")
    failing = all_etas[~all_ok & (all_etas > (largest if all_ok.any() else -np.inf))]
    return StepSearch(
        largest=largest,
        smallest_failing=float(failing.min()) if failing.size else float("inf"),
        step_sizes=all_etas,
        converged=all_ok,
        diverged=np.concatenate(div)[order],
        final_loss=np.concatenate(fl)[order],
        final_grad_norm=np.concatenate(fg)[order],
    )
