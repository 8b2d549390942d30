"""Quantities measured along a trajectory, and the registry of metrics recorded by name.

Every function accepts a single chain ``[W_1, ..., W_N]`` or a batched one (leading axis ``B``)
and returns one value per start. :func:`gd` and :func:`gradient_flow` record the metrics named
in :data:`BUILTIN_METRICS`; :func:`weight_metrics` turns names into functions of the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from dlncore.network import end_to_end
from dlncore.problem import Problem


def _op_norm(a: np.ndarray) -> np.ndarray:
    """Spectral norm over the last two axes."""
    return np.linalg.norm(a, ord=2, axis=(-2, -1))


def _symmetric_op_norm(a: np.ndarray) -> np.ndarray:
    """Spectral norm of symmetric matrices (last two axes): the largest ``|eigenvalue|``,
    cheaper than the SVD behind :func:`_op_norm`."""
    return np.max(np.abs(np.linalg.eigvalsh(a)), axis=-1)


def balancedness(weights: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``[D_1, ..., D_{N−1}]`` with ``D_j = W_{j+1}ᵀ W_{j+1} − W_j W_jᵀ`` (``d_j × d_j``)."""
    return [
        np.swapaxes(b, -1, -2) @ b - a @ np.swapaxes(a, -1, -2)
        for a, b in zip(weights[:-1], weights[1:], strict=True)
    ]


def imbalance(weights: Sequence[np.ndarray]) -> np.ndarray:
    """``max_j ‖D_j‖_op`` (0 for a single layer)."""
    ds = balancedness(weights)
    if not ds:
        return np.zeros(weights[0].shape[:-2])
    return np.max([_op_norm(d) for d in ds], axis=0)


def imbalance_drift(weights: Sequence[np.ndarray], start: Sequence[np.ndarray]) -> np.ndarray:
    """``max_j ‖D_j(k) − D_j(0)‖_op`` between ``weights`` and the initial ``start``."""
    pairs = zip(balancedness(weights), balancedness(start), strict=True)
    drifts = [_symmetric_op_norm(d - d0) for d, d0 in pairs]
    if not drifts:
        return np.zeros(weights[0].shape[:-2])
    return np.max(drifts, axis=0)


def max_factor_norm(weights: Sequence[np.ndarray]) -> np.ndarray:
    """``max_j ‖W_j‖_op``."""
    return np.max([_op_norm(w) for w in weights], axis=0)


def end_to_end_norm(weights: Sequence[np.ndarray]) -> np.ndarray:
    """``‖W_N ⋯ W_1‖_op``."""
    return _op_norm(end_to_end(weights))


def singular_values(weights: Sequence[np.ndarray]) -> np.ndarray:
    """Singular values of the end-to-end matrix, descending, shape ``(..., min(d_N, d_0))``."""
    return np.linalg.svd(end_to_end(weights), compute_uv=False)


def numerical_rank(weights: Sequence[np.ndarray], rtol: float = 1e-6) -> np.ndarray:
    """Number of singular values of ``W`` above ``rtol · σ_1(W)`` (0 for ``W = 0``)."""
    s = singular_values(weights)
    return np.sum(s > rtol * s[..., :1], axis=-1)


def effective_rank(weights: Sequence[np.ndarray]) -> np.ndarray:
    """Entropy-based effective rank ``exp(−Σ p_i log p_i)``, ``p = σ / Σσ`` (Roy & Vetterli)."""
    s = singular_values(weights)
    total = np.sum(s, axis=-1, keepdims=True)
    p = np.divide(s, total, out=np.zeros_like(s), where=total > 0)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return np.exp(-np.sum(plogp, axis=-1))


def gradient_norm(problem: Problem, weights: Sequence[np.ndarray]) -> np.ndarray:
    """``‖∇L^N‖ = (Σ_j ‖∇_{W_j} L^N‖_F²)^{1/2}``."""
    grads = problem.gradients(weights)
    return np.sqrt(sum(np.sum(g * g, axis=(-2, -1)) for g in grads))


def excess_loss(
    problem: Problem, weights: Sequence[np.ndarray], rank: int | None = None, rtol: float = 1e-6
) -> np.ndarray:
    """``L^N − L*_k``; ``k`` is ``rank`` or, when ``None``, the numerical rank of each start."""
    loss = np.asarray(problem.loss(weights))
    if rank is not None:
        return loss - problem.optimal_loss(rank)
    ranks = numerical_rank(weights, rtol)
    optimal = np.vectorize(problem.optimal_loss, otypes=[float])(ranks)
    return loss - optimal


def distance_to_minimizer(problem: Problem, weights: Sequence[np.ndarray], rank: int) -> np.ndarray:
    """``‖W_N ⋯ W_1 − W_k‖_F`` with ``W_k`` the best rank-``k`` matrix (see ``minimizer``)."""
    diff = end_to_end(weights) - problem.minimizer(rank)
    return np.linalg.norm(diff, axis=(-2, -1))


#: Metrics that :func:`dlncore.gd` records by name. The first three come from the step itself
#: (``‖η_k ∇L‖ / η_k``, ``‖W(k+1) − W(k)‖`` and its running sum); the others are
#: functions of the weights (:func:`weight_metrics`).
STEP_METRICS = ("grad_norm", "step_length", "path_length")
BUILTIN_METRICS = (
    *STEP_METRICS,
    "imbalance",
    "imbalance_drift",
    "max_factor_norm",
    "end_to_end_norm",
    "singular_values",
    "numerical_rank",
    "effective_rank",
)
MetricSpec = Sequence[str] | Mapping[str, Callable[[Sequence[np.ndarray]], np.ndarray]]


def weight_metrics(
    metrics: MetricSpec, start: Sequence[np.ndarray]
) -> dict[str, Callable[[Sequence[np.ndarray]], np.ndarray]]:
    """Functions ``f(weights) -> array`` of the weight metrics in ``metrics``.

    Parameters
    ----------
    metrics : sequence of str or mapping
        Names from :data:`BUILTIN_METRICS` (the step metrics among them are skipped: the
        caller computes them), or ``{name: f}``, returned as a dict unchanged.
    start : list of arrays
        The initial weights, the reference of ``imbalance_drift``.

    Raises
    ------
    ValueError
        For a name that is not in :data:`BUILTIN_METRICS`.
    """
    if isinstance(metrics, Mapping):
        return dict(metrics)
    registry = {
        "imbalance": imbalance,
        "imbalance_drift": lambda w: imbalance_drift(w, start),
        "max_factor_norm": max_factor_norm,
        "end_to_end_norm": end_to_end_norm,
        "singular_values": singular_values,
        "numerical_rank": numerical_rank,
        "effective_rank": effective_rank,
    }
    out = {}
    for name in metrics:
        if name not in BUILTIN_METRICS:
            raise ValueError(f"unknown metric {name!r}; known: {', '.join(BUILTIN_METRICS)}")
        if name in registry:
            out[name] = registry[name]
    return out
