"""Gradient flow ``dW_j/dt = −∇_{W_j} L^N``, integrated with scipy."""

from __future__ import annotations

import time as _time
from collections.abc import Sequence

import numpy as np
from scipy.integrate import solve_ivp

from dlncore.iterates import move_length
from dlncore.metrics import STEP_METRICS, MetricSpec, weight_metrics
from dlncore.network import batch_size
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
    record : int or sequence of float
        Number of geometrically spaced times in ``[0, t_final]`` (with 0 and ``t_final``), or
        the times themselves.
    metrics : sequence of str or mapping
        As for :func:`dlncore.gd` (``grad_norm`` and the weight metrics; not path length).
    rtol, atol : float
        Tolerances of ``scipy.integrate.solve_ivp``.
    method : str
        A ``solve_ivp`` method (default the 8th-order Runge–Kutta ``DOP853``).

    Returns
    -------
    Run
        With ``iterations=None`` and ``time`` the recorded times.
    """
    ws = problem.check(weights)
    if not np.isfinite(t_final) or t_final <= 0:
        raise ValueError(f"t_final must be positive and finite, got {t_final!r}")
    if isinstance(record, int | np.integer):
        if record < 2:
            raise ValueError(f"record needs at least 2 points, got {record}")
        times = np.unique(np.concatenate([[0.0], np.geomspace(t_final / 1e4, t_final, record - 1)]))
    else:
        times = np.unique(np.asarray(record, dtype=np.float64))
        if times[0] < 0 or times[-1] > t_final:
            raise ValueError(f"record times must lie in [0, {t_final}]")
    shapes = [w.shape for w in ws]
    sizes = np.cumsum([w.size for w in ws])[:-1]

    def unpack(y: np.ndarray) -> list[np.ndarray]:
        return [p.reshape(s) for p, s in zip(np.split(y, sizes), shapes, strict=True)]

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        _, grads = problem.loss_and_gradients(unpack(y))
        return -np.concatenate([g.ravel() for g in grads])

    began = _time.perf_counter()
    y0 = np.concatenate([w.ravel() for w in ws]).astype(np.float64)
    span = (0.0, float(t_final))
    sol = solve_ivp(rhs, span, y0, method=method, t_eval=times, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"gradient flow integration failed: {sol.message}")
    funcs = weight_metrics(metrics, ws)
    if "grad_norm" in metrics:
        funcs["grad_norm"] = lambda w: move_length(problem.loss_and_gradients(w)[1])
    for name in set(STEP_METRICS) - {"grad_norm"}:
        if name in metrics:
            raise ValueError(f"metric {name!r} is not available for gradient flow")
    states = [unpack(y) for y in sol.y.T]
    rec_metrics = {name: np.array([funcs[name](w) for w in states]) for name in metrics}
    batch = batch_size(ws)
    bshape = () if batch is None else (batch,)
    return Run(
        iterations=None,
        time=sol.t,
        loss=np.array([problem.loss(w) for w in states]),
        metrics=rec_metrics,
        weights=states[-1],
        diverged=np.zeros(bshape, dtype=bool),
        diverged_at=np.full(bshape, -1),
        diverged_loss=np.full(bshape, np.nan),
        info={
            "kind": "flow",
            "t_final": float(t_final),
            "rtol": rtol,
            "atol": atol,
            "method": method,
            "evaluations": int(sol.nfev),
            "widths": [ws[0].shape[-1]] + [w.shape[-2] for w in ws],
            "batch": batch,
            "seconds": _time.perf_counter() - began,
        },
    )
