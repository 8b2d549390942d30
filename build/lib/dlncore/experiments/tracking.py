"""Gradient descent against gradient flow: the gap on a fixed time horizon, and balancedness.

Chapter 6. GD with step ``η`` for ``n = T/η`` steps is compared with the gradient flow at the
common times ``t_i = i T / R``; all step sizes run in ONE batched :func:`dlncore.gd` call (one
start per step size, each with its own constant step), and the flow is integrated once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dlncore.descent import gd
from dlncore.flow import gradient_flow
from dlncore.metrics import STEP_METRICS, weight_metrics
from dlncore.network import Weights, end_to_end
from dlncore.problem import Problem
from dlncore.results import Run


def _flat_factors(weights: Sequence[np.ndarray]) -> np.ndarray:
    """All entries of ``W_1, ..., W_N`` in one vector per start: shape ``(P,)`` or ``(B, P)``."""
    lead = weights[0].shape[:-2]
    return np.concatenate([np.reshape(w, lead + (-1,)) for w in weights], axis=-1)


def imbalance_increment(
    problem: Problem, weights: Sequence[np.ndarray], step_size: float
) -> list[np.ndarray]:
    """``η² (G_{j+1}ᵀ G_{j+1} − G_j G_jᵀ)`` for ``j = 1..N−1``, ``G_j = ∇_{W_j} L^N``.

    By the book's identity this is exactly ``D_j(k+1) − D_j(k)`` for one GD step of size ``η``
    from ``weights`` (``D_j = W_{j+1}ᵀ W_{j+1} − W_j W_jᵀ``): the first-order terms cancel
    because ``G_j W_jᵀ = W_{j+1}ᵀ G_{j+1}``.
    """
    grads = problem.gradients(weights)
    eta2 = float(step_size) ** 2
    return [
        eta2 * (np.swapaxes(b, -1, -2) @ b - a @ np.swapaxes(a, -1, -2))
        for a, b in zip(grads[:-1], grads[1:], strict=True)
    ]


@dataclass
class FlowGap:
    """GD trajectories for several step sizes compared with the gradient flow.

    Attributes
    ----------
    step_sizes : array (B,)
        ``η_b = T / n_b``.
    step_counts : array (B,) of int
        ``n_b``: GD steps to reach ``T``.
    times : array (R + 1,)
        Common comparison times ``t_i = i T / R``.
    gap_end_to_end : array (B, R + 1)
        ``‖W_GD(t_i) − W_flow(t_i)‖_F`` for the end-to-end matrices (NaN after a divergence).
    gap_factors : array (B, R + 1)
        ``(Σ_j ‖W_j^GD(t_i) − W_j^flow(t_i)‖_F²)^{1/2}`` over all factors (NaN after a
        divergence).
    diverged : bool array (B,)
        GD with ``η_b`` diverged on ``[0, T]`` (see :func:`dlncore.gd`).
    diverged_at : int array (B,)
        Iteration of that divergence, −1 if none.
    diverged_loss : float array (B,)
        Loss there (``inf`` on overflow), NaN if none.
    flow_error : float
        ``max_i`` factor distance between the flow and a second flow integrated with tolerances
        ``loosen`` times larger: an (over-)estimate of the flow's own integration error.
    gd_run, flow_run : Run
        The batched GD run (start ``b`` uses ``η_b``; it keeps running past ``T`` until the
        largest ``n_b``, and only records with ``k ≤ n_b`` belong to the comparison) and the flow.
    """

    step_sizes: np.ndarray
    step_counts: np.ndarray
    times: np.ndarray
    gap_end_to_end: np.ndarray
    gap_factors: np.ndarray
    flow_error: float
    diverged: np.ndarray
    diverged_at: np.ndarray
    diverged_loss: np.ndarray
    gd_run: Run
    flow_run: Run

    @property
    def diverged_time(self) -> np.ndarray:
        """Time ``k η_b`` of each divergence, NaN if none, shape ``(B,)``."""
        return np.where(self.diverged, self.diverged_at * self.step_sizes, np.nan)

    def at_horizon(self, name: str) -> np.ndarray:
        """GD's ``"loss"`` or recorded metric ``name`` at ``T`` (iteration ``n_b``) per step size.

        Shape ``(B, ...)``; NaN for a step size that diverged on ``[0, T]``.
        """
        values = self.gd_run.loss if name == "loss" else self.gd_run.metrics[name]
        rows = np.searchsorted(self.gd_run.iterations, np.where(self.diverged, 0, self.step_counts))
        out = values[rows, np.arange(self.step_counts.size)].astype(np.float64)
        out[self.diverged] = np.nan
        return out

    def summary(self) -> str:
        """One line: the step sizes, and which diverged (when, at what loss)."""
        head = f"GD against the flow on [0, {self.times[-1]:g}]: {self.step_sizes.size} step sizes"
        if not self.diverged.any():
            return f"{head}, none diverged"
        which = ", ".join(
            f"eta = {eta:.3g} at t = {t:.3g} (iteration {k}, loss {loss:.3g})"
            for eta, t, k, loss in zip(
                self.step_sizes[self.diverged],
                self.diverged_time[self.diverged],
                self.diverged_at[self.diverged],
                self.diverged_loss[self.diverged],
                strict=True,
            )
        )
        return (
            f"{head}; {self.diverged.sum()} of {self.step_sizes.size} step sizes diverged: {which}"
        )

    def __repr__(self) -> str:
        return f"FlowGap({self.summary()})"

    @property
    def max_gap_end_to_end(self) -> np.ndarray:
        """``max_i ‖W_GD(t_i) − W_flow(t_i)‖_F`` per step size (NaN if it diverged), ``(B,)``."""
        return self.gap_end_to_end.max(axis=1)

    @property
    def max_gap_factors(self) -> np.ndarray:
        """``max_i`` factor distance per step size, shape ``(B,)``."""
        return self.gap_factors.max(axis=1)


def gd_flow_gap(
    problem: Problem,
    weights: Sequence[np.ndarray],
    t_final: float,
    step_counts: Sequence[int],
    num_times: int = 20,
    *,
    metrics: Sequence[str] = (),
    rtol: float = 1e-12,
    atol: float = 1e-14,
    loosen: float = 100.0,
    progress: bool | str = False,
) -> FlowGap:
    """Distance between GD (step ``η_b = T/n_b``, ``n_b`` steps) and the flow on ``[0, T]``.

    Parameters
    ----------
    problem : Problem
    weights : list of arrays
        One (unbatched) start ``[W_1(0), ..., W_N(0)]``, shared by GD and the flow.
    t_final : float
        Horizon ``T``.
    step_counts : sequence of int
        ``n_b``, each a positive multiple of ``num_times``.
    num_times : int
        ``R``: the comparison uses ``t_i = i T / R``, ``i = 0..R``.
    metrics : sequence of str
        Extra built-in weight metrics (e.g. ``"imbalance_drift"``) recorded by both runs.
    rtol, atol : float
        Tolerances of the flow; a check flow runs with ``loosen`` times larger tolerances.
    progress : bool or str
        Progress bar of the GD run.

    Returns
    -------
    FlowGap
    """
    ws = problem.check(weights)
    if ws[0].ndim != 2:
        raise ValueError("gd_flow_gap takes a single (unbatched) start")
    counts = _check_inputs(t_final, step_counts, num_times, metrics)
    etas = t_final / counts.astype(np.float64)
    run, own = _gd_all_step_sizes(problem, ws, etas, counts, num_times, metrics, progress)
    times = t_final * np.arange(num_times + 1) / num_times
    flow, flow_error = _flow_and_its_error(problem, ws, t_final, times, metrics, rtol, atol, loosen)
    # a start that diverged at iteration k has no iterates after k (the run may stop early)
    diverged = run.diverged & (run.diverged_at <= counts)
    reached = ~diverged[:, None] | (own <= run.diverged_at[:, None])  # (B, R + 1)
    gap_e2e, gap_fac = _distances(run, np.where(reached, own, 0), flow)
    gap_e2e[~reached] = np.nan
    gap_fac[~reached] = np.nan
    return FlowGap(
        step_sizes=etas,
        step_counts=counts,
        times=times,
        gap_end_to_end=gap_e2e,
        gap_factors=gap_fac,
        flow_error=flow_error,
        diverged=diverged,
        diverged_at=np.where(diverged, run.diverged_at, -1),
        diverged_loss=np.where(diverged, run.diverged_loss, np.nan),
        gd_run=run,
        flow_run=flow,
    )


def _check_inputs(
    t_final: float, step_counts: Sequence[int], num_times: int, metrics: Sequence[str]
) -> np.ndarray:
    """The step counts ``n_b`` as an int array, after checking the arguments of the comparison."""
    counts = np.asarray(step_counts, dtype=np.int64)
    if counts.ndim != 1 or counts.size == 0 or np.any(counts <= 0):
        raise ValueError(f"step_counts must be positive integers, got {step_counts!r}")
    if np.any(counts % num_times):
        raise ValueError(f"every step count must be a multiple of num_times = {num_times}")
    if not np.isfinite(t_final) or t_final <= 0:
        raise ValueError(f"t_final must be positive and finite, got {t_final!r}")
    if set(metrics) & set(STEP_METRICS):
        raise ValueError(f"metrics must be weight metrics, not {', '.join(STEP_METRICS)}")
    return counts


def _tracked(metrics: Sequence[str], start: Weights) -> dict:
    """Metrics recorded by GD and the flow: the factors, the end-to-end matrix, ``metrics``."""
    return {"factors": _flat_factors, "end_to_end": end_to_end, **weight_metrics(metrics, start)}


def _gd_all_step_sizes(
    problem: Problem,
    ws: Weights,
    etas: np.ndarray,
    counts: np.ndarray,
    num_times: int,
    metrics: Sequence[str],
    progress: bool | str,
) -> tuple[Run, np.ndarray]:
    """One batched GD run, start ``b`` with step ``η_b``, recorded at the iterations ``i n_b / R``.

    Returns the run and ``own`` (shape ``(B, R + 1)``): the iteration of ``t_i`` for start ``b``.
    """
    batch = counts.size
    start = [np.broadcast_to(w, (batch,) + w.shape).copy() for w in ws]
    own = np.outer(counts // num_times, np.arange(num_times + 1))  # (B, R + 1)
    run = gd(
        problem,
        start,
        etas[None, :],
        int(counts.max()),
        record=np.unique(own),  # the union over starts
        metrics=_tracked(metrics, start),
        progress=progress,
    )
    return run, own


def _flow_and_its_error(
    problem: Problem,
    ws: Weights,
    t_final: float,
    times: np.ndarray,
    metrics: Sequence[str],
    rtol: float,
    atol: float,
    loosen: float,
) -> tuple[Run, float]:
    """The flow on ``[0, T]`` at ``times``, and its largest factor distance to a looser flow."""
    flow = gradient_flow(
        problem, ws, t_final, record=times, metrics=_tracked(metrics, ws), rtol=rtol, atol=atol
    )
    check = gradient_flow(
        problem,
        ws,
        t_final,
        record=times,
        metrics={"factors": _flat_factors},
        rtol=rtol * loosen,
        atol=atol * loosen,
    )
    flow_error = float(
        np.max(np.linalg.norm(flow.metrics["factors"] - check.metrics["factors"], axis=-1))
    )
    return flow, flow_error


def _distances(run: Run, own: np.ndarray, flow: Run) -> tuple[np.ndarray, np.ndarray]:
    """End-to-end and factor distances, shape ``(B, R + 1)``, of GD at ``own`` to the flow."""
    rows = np.searchsorted(run.iterations, own)  # record index of (b, t_i)
    cols = np.arange(own.shape[0])[:, None]
    g_e2e = run.metrics["end_to_end"][rows, cols]  # (B, R + 1, d_y, d_x)
    g_fac = run.metrics["factors"][rows, cols]  # (B, R + 1, P)
    gap_e2e = np.linalg.norm(g_e2e - flow.metrics["end_to_end"][None], axis=(-2, -1))
    gap_fac = np.linalg.norm(g_fac - flow.metrics["factors"][None], axis=-1)
    return gap_e2e, gap_fac
