"""Gradient flow ``dW_j/dt = −∇_{W_j} L^N``, integrated with scipy."""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Sequence

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import OptimizeResult

from dlncore.iterates import move_length
from dlncore.metrics import STEP_METRICS, MetricSpec, weight_metrics
from dlncore.network import Weights, batch_size, flatten, unflatten, widths
from dlncore.problem import Problem
from dlncore.results import Run


def gradient_flow(
    problem: Problem,
    weights: Sequence[np.ndarray],
    t_final: float,
    *,
    record: int | Sequence[float] = 200,
    metrics: MetricSpec = (),
    rtol: float = 1e-10,
    atol: float = 1e-12,
    method: str = "DOP853",
) -> Run:
    """Integrate the gradient flow from ``weights`` up to time ``t_final``.

    Parameters
    ----------
    problem : Problem
    weights : list of arrays
        Start ``[W_1(0), ..., W_N(0)]``, each ``(d_j, d_{j−1})`` or ``(B, d_j, d_{j−1})``.
    t_final : float
        Horizon ``T > 0``.
    record : int or sequence of float
        Number of times to record in ``[0, T]``, or the times themselves (:func:`record_times`).
    metrics : sequence of str or mapping
        As for :func:`dlncore.gd` (``grad_norm`` and the weight metrics; not path length).
    rtol, atol : float
        Tolerances of ``scipy.integrate.solve_ivp``.
    method : str
        A ``solve_ivp`` method (default the 8th-order Runge–Kutta ``DOP853``).

    Returns
    -------
    Run
        With ``iterations=None``, ``time`` the recorded times ``(R,)``, no divergence.
    """
    ws = problem.check(weights)
    times = record_times(record, t_final)
    funcs = _flow_metrics(problem, metrics, ws)
    solver = {"rtol": rtol, "atol": atol, "method": method}
    began = _time.perf_counter()
    states, sol = _integrate(problem, ws, t_final, times, solver)
    bshape = ws[0].shape[:-2]
    return Run(
        iterations=None,
        time=sol.t,
        loss=np.array([problem.loss(w) for w in states]),
        metrics={name: np.array([f(w) for w in states]) for name, f in funcs.items()},
        weights=states[-1],
        diverged=np.zeros(bshape, dtype=bool),
        diverged_at=np.full(bshape, -1),
        diverged_loss=np.full(bshape, np.nan),
        info={
            "kind": "flow",
            "t_final": float(t_final),
            **solver,
            "evaluations": int(sol.nfev),
            "widths": widths(ws),
            "batch": batch_size(ws),
            "seconds": _time.perf_counter() - began,
        },
    )


def check_horizon(t_final: float) -> float:
    """``t_final`` as a float, after checking that it is positive and finite."""
    if not np.isfinite(t_final) or t_final <= 0:
        raise ValueError(f"t_final must be positive and finite, got {t_final!r}")
    return float(t_final)


def record_times(record: int | Sequence[float], t_final: float) -> np.ndarray:
    """The times to record, sorted: ``record`` points (0, then ``record − 1`` geometrically
    spaced from ``T/10⁴`` to ``T``), or the times ``record`` in ``[0, T]``; shape ``(R,)``."""
    t_final = check_horizon(t_final)
    if isinstance(record, int | np.integer):
        if record < 2:
            raise ValueError(f"record needs at least 2 points, got {record}")
        return np.unique(np.concatenate([[0.0], np.geomspace(t_final / 1e4, t_final, record - 1)]))
    times = np.unique(np.asarray(record, dtype=np.float64))
    if times[0] < 0 or times[-1] > t_final:
        raise ValueError(f"record times must lie in [0, {t_final}]")
    return times


def _flow_metrics(
    problem: Problem, metrics: MetricSpec, ws: Weights
) -> dict[str, Callable[[Weights], np.ndarray]]:
    """The functions of the weights recorded along the flow (``grad_norm`` included)."""
    for name in set(STEP_METRICS) - {"grad_norm"}:
        if name in metrics:
            raise ValueError(f"metric {name!r} is not available for gradient flow")
    funcs = weight_metrics(metrics, ws)
    if "grad_norm" in metrics:
        funcs["grad_norm"] = lambda w: move_length(problem.loss_and_gradients(w)[1])
    return {name: funcs[name] for name in metrics}  # in the order asked for


def _integrate(
    problem: Problem, ws: Weights, t_final: float, times: np.ndarray, solver: dict
) -> tuple[list[Weights], OptimizeResult]:
    """Solve the flow on ``[0, t_final]`` with ``solve_ivp(**solver)``; the weights at
    ``times`` and scipy's solution."""
    shapes = [w.shape for w in ws]

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        _, grads = problem.loss_and_gradients(unflatten(y, shapes))
        return -flatten(grads)

    y0 = flatten(ws).astype(np.float64)
    span = (0.0, float(t_final))
    sol = solve_ivp(rhs, span, y0, t_eval=times, **solver)
    if not sol.success:
        raise RuntimeError(f"gradient flow integration failed: {sol.message}")
    return [unflatten(y, shapes) for y in sol.y.T], sol
