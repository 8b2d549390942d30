"""Theory quantities: the Hessian of ``L^N`` and the book's explicit step-size bound.

Optimal values ``L*_k``, minimizers ``W_k`` and critical values live on :class:`Problem`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dlncore.bounds import (
    curvature_bound,
    data_constants,
    drift_bound,
    end_to_end_radius,
    factor_bound,
    gradient_bound,
)
from dlncore.metrics import imbalance
from dlncore.network import chain, check_weights
from dlncore.problem import Problem


def hessian_vector_product(
    problem: Problem, weights: Sequence[np.ndarray], direction: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Second derivative of ``L^N`` at ``weights`` applied to ``direction = [V_1, ..., V_N]``.

    Differentiates ``∇_j L = A_jᵀ E B_jᵀ`` (``E = W Σxx − Σyx``) along ``V``: the product rule
    over ``A_j = W_N⋯W_{j+1}``, ``E`` and ``B_j = W_{j−1}⋯W_1``. Single (unbatched) chains.
    """
    ws = problem.check(weights)
    vs = check_weights(direction)
    if [v.shape for v in vs] != [w.shape for w in ws] or ws[0].ndim != 2:
        raise ValueError("direction must have the shapes of weights (single, unbatched chain)")
    n = len(ws)

    def with_v(i: int) -> list[np.ndarray]:  # the chain with W_i replaced by V_i
        return [vs[j] if j == i else ws[j] for j in range(n)]

    def d_chain(first: int, last: int) -> np.ndarray:  # derivative of W_last⋯W_first
        out = np.zeros_like(chain(ws, first, last))
        for i in range(first - 1, last):
            out = out + chain(with_v(i), first, last)
        return out

    W = chain(ws, 1, n)
    E = W @ problem.sxx - problem.syx
    dE = d_chain(1, n) @ problem.sxx
    out = []
    for j in range(1, n + 1):
        A, B = chain(ws, j + 1, n), chain(ws, 1, j - 1)
        dA, dB = d_chain(j + 1, n), d_chain(1, j - 1)
        out.append(dA.T @ E @ B.T + A.T @ dE @ B.T + A.T @ E @ dB.T)
    return out


def hessian(problem: Problem, weights: Sequence[np.ndarray]) -> np.ndarray:
    """The Hessian of ``L^N`` at a single chain, a symmetric ``P × P`` matrix.

    Coordinates are the entries of ``W_1, ..., W_N`` in that order, each row-major
    (``P = Σ_j d_j d_{j−1}``). Cost ``O(P · N²)`` products: meant for small networks.
    """
    ws = problem.check(weights)
    shapes = [w.shape for w in ws]
    sizes = [int(np.prod(s)) for s in shapes]
    total = sum(sizes)
    H = np.empty((total, total))
    for col in range(total):
        e = np.zeros(total)
        e[col] = 1.0
        parts = np.split(e, np.cumsum(sizes)[:-1])
        direction = [p.reshape(s) for p, s in zip(parts, shapes, strict=True)]
        hv = hessian_vector_product(problem, ws, direction)
        H[:, col] = np.concatenate([h.ravel() for h in hv])
    return 0.5 * (H + H.T)


def step_size_bound(
    problem: Problem, weights: Sequence[np.ndarray], tol: float = 1e-6
) -> float | np.ndarray:
    """The book's sufficient step size for monotone GD from ``weights`` (one per start).

    Returns the largest ``η`` with ``η · ℓ(η) ≤ 1`` (found by bisection, relative ``tol``), where,
    with ``L_0 = L^N(W(0))``, ``δ_0 = max_j ‖D_j(0)‖_op``, ``λ = λ_max(X Xᵀ)``, ``σ = σ_min(X)``:

    - ``δ = δ_0 + 2 η L_0`` bounds the imbalance of every iterate (drift lemma);
    - ``R = (‖Y‖_op + √(2 L_0)) / σ`` bounds ``‖W_N⋯W_1‖_op`` (loss does not increase);
    - ``B_0² = R^{2/N} + c_N δ`` with ``c_N = N − 1 + ⌊(N − 1)/2⌋`` bounds ``‖W_j‖_op²``
      (approximate balancedness);
    - ``g = √(2 N L_0 λ) B_0^{N−1}`` bounds ``‖∇L^N‖``, so a step stays in the set
      ``max_j ‖W_j‖_op ≤ B_1 = B_0 + η g``, on which
      ``‖W X − Y‖_F ≤ ρ = √(2 L_0) + √(N λ) B_1^{N−1} η g``;
    - ``ℓ = N λ B_1^{2N−2} + (N − 1) B_1^{N−2} √λ ρ`` bounds the curvature of ``L^N`` there.

    Assumptions: ``X Xᵀ`` invertible and a constant step (for a schedule use ``sup_k η_k``).
    Under ``η ≤`` this bound every step satisfies ``L(k+1) ≤ L(k) − (η/2)‖∇L(k)‖²`` (induction
    over ``k``; the proof is in the book's chapter on step sizes). It is a sufficient
    condition derived for this book, not a constant of the paper.
    """
    ws = problem.check(weights)
    n = len(ws)
    l0 = np.atleast_1d(np.asarray(problem.loss(ws), dtype=np.float64))
    d0 = np.atleast_1d(imbalance(ws))
    lam = data_constants(problem)[0]
    radius = end_to_end_radius(problem, l0)

    def curvature_times_eta(eta: np.ndarray) -> np.ndarray:
        delta = d0 + drift_bound(eta, l0)
        b0 = factor_bound(radius, delta, n)
        g = gradient_bound(problem, l0, b0, n)
        b1 = b0 + eta * g
        rho = np.sqrt(2 * l0) + np.sqrt(n * lam) * b1 ** (n - 1) * eta * g
        return eta * curvature_bound(problem, b1, rho, n)

    lo = np.zeros_like(l0)
    hi = np.ones_like(l0)
    while np.any(curvature_times_eta(hi) <= 1):
        hi = np.where(curvature_times_eta(hi) <= 1, 2 * hi, hi)
    while np.any(hi - lo > tol * hi):
        mid = 0.5 * (lo + hi)
        fits = curvature_times_eta(mid) <= 1
        lo, hi = np.where(fits, mid, lo), np.where(fits, hi, mid)
    return float(lo[0]) if ws[0].ndim == 2 else lo
