"""The book's a-priori bounds along gradient descent (drift, norms, gradient, curvature).

Every bound here is derived in the book (chapters on boundedness and step sizes); none is a
constant of the paper. Notation: ``L_0 = L^N(W(0))``, ``D_j = W_{j+1}ᵀ W_{j+1} − W_j W_jᵀ``,
``δ`` a bound on ``max_j ‖D_j‖_op``, ``λ = λ_max(X Xᵀ)``, ``σ = σ_min(X)``.

- drift lemma: under the descent condition ``L(k+1) ≤ L(k) − (η_k/2)‖∇L(k)‖²``,
  ``‖D_j(k) − D_j(0)‖_op ≤ 2 (sup_i η_i) (L(0) − L(k))`` (:func:`drift_bound`);
- end-to-end bound: ``‖W‖_op ≤ (‖Y‖_op + √(2 L^1(W))) / σ`` (:func:`end_to_end_radius`);
- factor bound: ``max_j ‖D_j‖_op ≤ δ`` implies
  ``max_j ‖W_j‖_op² ≤ ‖W‖_op^{2/N} + c_N δ``, ``c_N = N − 1 + ⌊(N − 1)/2⌋``
  (:func:`factor_bound`);
- gradient bound: ``max_j ‖W_j‖_op ≤ B`` implies ``‖∇L^N‖ ≤ √(2 N L λ) B^{N−1}``;
- curvature bound: on ``max_j ‖W_j‖_op ≤ B`` with ``‖W X − Y‖_F ≤ ρ``, the second derivative
  of ``L^N`` along ``V`` is at most ``ℓ ‖V‖²``, ``ℓ = N λ B^{2N−2} + (N − 1) B^{N−2} √λ ρ``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dlncore.metrics import imbalance
from dlncore.network import Weights
from dlncore.problem import Problem


def imbalance_constant(depth: int) -> int:
    """``c_N = N − 1 + ⌊(N − 1)/2⌋``, the constant of the factor bound."""
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    n = int(depth)
    return n - 1 + (n - 1) // 2


def data_constants(problem: Problem) -> tuple[float, float, float]:
    """``(λ_max(X Xᵀ), σ_min(X), ‖Y‖_op)``, the data constants the bounds use (float64)."""
    lam = float(problem._sxx_eig[-1])
    sig = float(np.sqrt(problem._sxx_eig[0]))
    y_op = float(np.linalg.norm(problem.Y.astype(np.float64), ord=2))
    return lam, sig, y_op


def drift_bound(
    step_size: float | np.ndarray,
    loss_start: float | np.ndarray,
    loss_now: float | np.ndarray = 0.0,
) -> np.ndarray:
    """``2 η (L(0) − L(k))``: bound on ``max_j ‖D_j(k) − D_j(0)‖_op`` (drift lemma).

    Valid when every step up to ``k`` satisfied ``L(i+1) ≤ L(i) − (η_i/2)‖∇L(i)‖²`` and
    ``η ≥ sup_i η_i``. With the default ``loss_now = 0`` it is the uniform bound ``2 η L(0)``.
    """
    return 2.0 * np.asarray(step_size) * (np.asarray(loss_start) - np.asarray(loss_now))


def end_to_end_radius(problem: Problem, loss: float | np.ndarray) -> np.ndarray:
    """``R = (‖Y‖_op + √(2 L)) / σ_min(X)``: every ``W`` with ``L^1(W) ≤ L`` has ``‖W‖_op ≤ R``."""
    _, sig, y_op = data_constants(problem)
    return (y_op + np.sqrt(2 * np.asarray(loss, dtype=np.float64))) / sig


def factor_bound(radius: float | np.ndarray, delta: float | np.ndarray, depth: int) -> np.ndarray:
    """``B = (R^{2/N} + c_N δ)^{1/2}``: bound on ``max_j ‖W_j‖_op``.

    Holds for every chain of depth ``N`` with ``‖W_N⋯W_1‖_op ≤ R`` and ``max_j ‖D_j‖_op ≤ δ``.
    """
    n = int(depth)
    c_n = imbalance_constant(n)
    return np.sqrt(np.asarray(radius) ** (2 / n) + c_n * np.asarray(delta))


def gradient_bound(
    problem: Problem, loss: float | np.ndarray, factor: float | np.ndarray, depth: int
) -> np.ndarray:
    """``√(2 N L λ) B^{N−1}``: bound on ``‖∇L^N‖`` where ``L^N ≤ L`` and ``max_j ‖W_j‖_op ≤ B``."""
    lam, _, _ = data_constants(problem)
    n = int(depth)
    return np.sqrt(2 * n * np.asarray(loss) * lam) * np.asarray(factor) ** (n - 1)


def curvature_bound(
    problem: Problem, factor: float | np.ndarray, residual: float | np.ndarray, depth: int
) -> np.ndarray:
    """``ℓ = N λ B^{2N−2} + (N − 1) B^{N−2} √λ ρ``: bound on the curvature of ``L^N``.

    Valid at every chain with ``max_j ‖W_j‖_op ≤ B`` and ``‖W X − Y‖_F ≤ ρ``: the second
    derivative of ``L^N`` along any direction ``V`` is at most ``ℓ ‖V‖²``.
    """
    lam, _, _ = data_constants(problem)
    n = int(depth)
    b = np.asarray(factor, dtype=np.float64)
    return n * lam * b ** (2 * n - 2) + (n - 1) * b ** (n - 2) * np.sqrt(lam) * np.asarray(residual)


@dataclass(frozen=True)
class NormBounds:
    """A-priori bounds along GD from one start (arrays of shape ``(B,)`` for batched starts).

    Attributes
    ----------
    loss : initial loss ``L_0``.
    imbalance : initial imbalance ``δ_0 = max_j ‖D_j(0)‖_op``.
    delta : ``δ_0 + 2 η L_0``, bound on ``max_j ‖D_j(k)‖_op`` for every ``k``.
    radius : ``R``, bound on ``‖W(k)‖_op``.
    factor : ``(R^{2/N} + c_N δ)^{1/2}``, bound on ``max_j ‖W_j(k)‖_op``.
    """

    loss: np.ndarray
    imbalance: np.ndarray
    delta: np.ndarray
    radius: np.ndarray
    factor: np.ndarray


def norm_bounds(
    problem: Problem, weights: Sequence[np.ndarray], step_size: float | np.ndarray
) -> NormBounds:
    """The book's bounds on the imbalance and on the norms of every GD iterate from ``weights``.

    Parameters
    ----------
    problem : Problem
    weights : list of arrays
        The start ``W(0)``, single or batched (``B`` starts).
    step_size : float or array (B,)
        ``sup_k η_k`` (one per start for batched starts).

    Returns
    -------
    NormBounds
        Valid for all iterates as long as every step satisfies the descent condition
        ``L(k+1) ≤ L(k) − (η/2)‖∇L(k)‖²`` (guaranteed for ``η ≤`` :func:`step_size_bound`).
    """
    ws: Weights = problem.check(weights)
    n = len(ws)
    l0 = np.asarray(problem.loss(ws), dtype=np.float64)
    d0 = np.asarray(imbalance(ws), dtype=np.float64)
    delta = d0 + drift_bound(step_size, l0)
    radius = end_to_end_radius(problem, l0)
    return NormBounds(
        loss=l0,
        imbalance=d0,
        delta=delta,
        radius=radius,
        factor=factor_bound(radius, delta, n),
    )


def drift_identity_residual(
    problem: Problem, weights: Sequence[np.ndarray], step_size: float
) -> tuple[np.ndarray, np.ndarray]:
    """Check ``D_j(k+1) = D_j(k) + η² (G_{j+1}ᵀ G_{j+1} − G_j G_jᵀ)`` on one GD step.

    Returns ``(residual, change)``: ``max_j`` of the spectral norm of the two sides' difference,
    and ``max_j ‖D_j(k+1) − D_j(k)‖_op`` for scale (both per start).
    """
    ws = problem.check(weights)
    grads = problem.gradients(ws)
    new = [w - step_size * g for w, g in zip(ws, grads, strict=True)]

    def bal(chain: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [
            b.swapaxes(-1, -2) @ b - a @ a.swapaxes(-1, -2)
            for a, b in zip(chain[:-1], chain[1:], strict=True)
        ]

    def op(a: np.ndarray) -> np.ndarray:
        return np.linalg.norm(a, ord=2, axis=(-2, -1))

    d_old, d_new, g2 = bal(ws), bal(new), bal(grads)
    if not d_old:
        zero = np.zeros(ws[0].shape[:-2])
        return zero, zero
    residual = np.max(
        [op(b - a - step_size**2 * g) for a, b, g in zip(d_old, d_new, g2, strict=True)], axis=0
    )
    change = np.max([op(b - a) for a, b in zip(d_old, d_new, strict=True)], axis=0)
    return residual, change


def descent_margin(
    problem: Problem, weights: Sequence[np.ndarray], step_size: float | np.ndarray
) -> np.ndarray:
    """``L(W) − L(W − η∇L(W)) − (η/2)‖∇L(W)‖²``: non-negative iff the descent condition holds.

    ``step_size`` is a number or one step per start (shape ``(B,)``). Losses in the exact
    (residual) form; the result is per start.
    """
    ws = problem.check(weights)
    grads = problem.gradients(ws)
    eta = np.asarray(step_size, dtype=np.float64)
    eta_b = eta.reshape(-1, 1, 1) if eta.ndim == 1 else eta
    new = [w - eta_b * g for w, g in zip(ws, grads, strict=True)]
    g2 = sum(np.sum(g * g, axis=(-2, -1)) for g in grads)
    return np.asarray(problem.loss(ws)) - np.asarray(problem.loss(new)) - 0.5 * eta * g2
