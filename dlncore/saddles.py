"""The saddle at the origin: its Hessian spectrum and the time gradient descent needs to leave it.

The origin ``W_1 = ⋯ = W_N = 0`` is a critical point of ``L^N`` for ``N ≥ 2``. For ``N = 2`` the
Hessian there has eigenvalues ``±σ_i(Σyx)`` (a strict saddle); for ``N ≥ 3`` it is zero (a
non-strict saddle). Near the origin gradient descent leaves exponentially fast for ``N = 2``
(escape time ``∝ log(1/ε)``) and polynomially slowly for ``N ≥ 3`` (``∝ ε^{−(N−2)}``).
These are the book's derivations, not statements of the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.integrate import quad

from dlncore.network import batch_size
from dlncore.problem import Problem


def origin_hessian_eigenvalues(problem: Problem, dims: Sequence[int]) -> np.ndarray:
    """Predicted eigenvalues of the Hessian of ``L^N`` at the origin, ascending.

    Parameters
    ----------
    problem : Problem
    dims : sequence of int
        Widths ``[d_0, ..., d_N]`` with ``d_0 = d_x`` and ``d_N = d_y``.

    Returns
    -------
    array, shape (P,)
        ``P = Σ_j d_j d_{j−1}`` eigenvalues. ``N = 1``: those of ``Σxx ⊗ I_{d_y}`` (the Hessian
        of ``L^1``, the same everywhere). ``N = 2``: ``±σ_i(Σyx)``, ``i = 1..min(d_x, d_y)``, each
        ``d_1`` times, and zeros. ``N ≥ 3``: all zero, because
        ``L^N(V) − L^N(0) = −⟨V_N⋯V_1, Σyx⟩ + ½‖V_N⋯V_1 Σxx^{1/2}‖² = O(‖V‖^N)``.
    """
    dims = [int(d) for d in dims]
    if len(dims) < 2 or dims[0] != problem.d_x or dims[-1] != problem.d_y:
        raise ValueError(
            f"dims {dims} must start at d_x = {problem.d_x} and end at d_y = {problem.d_y}"
        )
    n = len(dims) - 1
    total = sum(dims[j] * dims[j + 1] for j in range(n))
    if n == 1:
        lam = np.linalg.eigvalsh(problem.sxx.astype(np.float64))
        return np.sort(np.repeat(lam, problem.d_y))
    if n >= 3:
        return np.zeros(total)
    s = np.linalg.svd(problem.syx.astype(np.float64), compute_uv=False)
    nonzero = np.concatenate([s, -s])
    values = np.concatenate([np.repeat(nonzero, dims[1]), np.zeros(total - nonzero.size * dims[1])])
    return np.sort(values)


def escape_times(
    problem: Problem,
    weights: Sequence[np.ndarray],
    step_size: float | np.ndarray,
    max_steps: int,
    threshold: float | np.ndarray | None = None,
    fraction: float = 0.5,
) -> np.ndarray:
    """First GD iteration at which the loss falls below a threshold, for every start.

    Runs ``W_j(k+1) = W_j(k) − η ∇_{W_j} L^N(W(k))`` and stops as soon as every start has
    escaped (or after ``max_steps`` steps).

    Parameters
    ----------
    problem : Problem
    weights : list of arrays
        Starts ``[W_1(0), ..., W_N(0)]``: single ``(d_j, d_{j−1})`` or batched
        ``(B, d_j, d_{j−1})``.
    step_size : float or array (B,)
        Constant step ``η``, or one constant step per start.
    max_steps : int
        Budget of iterations.
    threshold : float or array (B,), optional
        Escape when ``L^N(W(k)) ≤ threshold``. Default: ``fraction · L^N(W(0))`` per start.
    fraction : float
        Used when ``threshold`` is None.

    Returns
    -------
    array of float, shape () or (B,)
        The escape iteration ``k`` (0 if the start is already below the threshold); NaN for a
        start that did not escape within ``max_steps`` (censored) or whose loss became
        non-finite.

    Notes
    -----
    The loss is the covariance form of :meth:`Problem.loss_and_gradients` (absolute accuracy
    about ``‖Y‖² · eps``), adequate for thresholds of the order of ``‖Y‖²``.
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, int | np.integer) or max_steps < 0:
        raise ValueError(f"max_steps must be a non-negative integer, got {max_steps!r}")
    ws = problem.check(weights)
    batch = batch_size(ws)
    bshape = () if batch is None else (batch,)
    eta = np.asarray(step_size, dtype=np.float64)
    if eta.ndim == 0:
        eta_b = np.broadcast_to(eta, bshape)
    elif batch is not None and eta.shape == (batch,):
        eta_b = eta
    else:
        raise ValueError(f"step_size must be a number or have shape (B,); got {eta.shape}")
    if not np.all(np.isfinite(eta_b) & (eta_b > 0)):
        raise ValueError("step sizes must be positive and finite")
    loss, grads = problem.loss_and_gradients(ws)
    if threshold is None:
        thr = fraction * np.asarray(loss, dtype=np.float64)
    else:
        thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), bshape)
    out = np.full(bshape, np.nan)
    active = np.ones(bshape, dtype=bool)
    with np.errstate(all="ignore"):
        for k in range(max_steps + 1):
            loss = np.asarray(loss, dtype=np.float64)
            done = active & (loss <= thr)
            out = np.where(done, float(k), out)
            active = active & ~done & np.isfinite(loss)
            if not np.any(active) or k == max_steps:
                break
            step = (eta_b * active).astype(problem.dtype)
            step = step.reshape(bshape + (1, 1))
            for w, g in zip(ws, grads, strict=True):
                w -= step * g
            loss, grads = problem.loss_and_gradients(ws)
    return out if batch is not None else np.float64(out)


def scalar_escape_time(
    depth: int, eps: float, sigma: float, threshold: float | None = None
) -> float:
    """Gradient-flow escape time of the scalar balanced network, by exact quadrature.

    The problem: ``d_x = d_y = 1``, ``Σxx = 1``, ``Σyx = σ``, ``‖Y‖² = σ²`` (one sample ``x = 1``,
    ``y = σ``), all widths 1, every factor starting at ``w_j(0) = ε > 0``. The factors stay
    equal and ``u = w^N`` obeys ``u̇ = N u^{2 − 2/N} (σ − u)``, so the time to reach
    ``L = ½(σ − u)² ≤ threshold`` is

    ``T = ∫_{ε^N}^{u*} du / (N u^{2−2/N} (σ − u))``,  ``u* = σ − √(2 threshold)``.

    For ``N = 2`` this is ``[log(u / (σ − u))]/(2σ)`` between the limits. For small ``ε``:
    ``T ≈ log(σ/ε²)/(2σ)`` (``N = 2``) and ``T ≈ ε^{2−N}/((N − 2)σ)`` (``N ≥ 3``), see
    :func:`escape_time_asymptotic`.

    Parameters
    ----------
    depth : int
        ``N ≥ 2``.
    eps : float
        Initial value of every factor, ``0 < ε^N < u*``.
    sigma : float
        ``σ > 0``.
    threshold : float, optional
        Loss level; default ``σ²/4``, half-way between ``L*_0 = σ²/2`` and ``L*_1 = 0``.

    Returns
    -------
    float
        The escape time ``T`` (continuous time; GD with step ``η`` needs about ``T/η`` steps).
    """
    if depth < 2:
        raise ValueError(f"depth must be at least 2, got {depth}")
    if not (eps > 0 and sigma > 0):
        raise ValueError("eps and sigma must be positive")
    threshold = sigma**2 / 4 if threshold is None else float(threshold)
    u_star = sigma - np.sqrt(2 * threshold)
    u0 = eps**depth
    if not 0 < u0 < u_star:
        raise ValueError(
            f"need 0 < ε^N = {u0:.3g} < u* = {u_star:.3g}: the start is already escaped"
        )
    if depth == 2:
        return float((np.log(u_star / (sigma - u_star)) - np.log(u0 / (sigma - u0))) / (2 * sigma))
    a = 2 - 2 / depth
    # substitute u = exp(s): du = u ds, integrand u^{1−a} / (N (σ − u))
    value, _ = quad(
        lambda s: np.exp((1 - a) * s) / (depth * (sigma - np.exp(s))),
        np.log(u0),
        np.log(u_star),
        epsabs=0.0,
        epsrel=1e-12,
        limit=200,
    )
    return float(value)


def escape_time_asymptotic(depth: int, eps: float | np.ndarray, sigma: float) -> np.ndarray:
    """Leading small-``ε`` escape time from the origin: ``log(σ/ε²)/(2σ)`` or ``ε^{2−N}/((N−2)σ)``.

    The first is the linear growth rate ``σ`` of each factor near a strict saddle (``N = 2``);
    the second integrates ``ẇ ≈ σ w^{N−1}`` (``N ≥ 3``). Continuous time; divide by ``η``.
    """
    eps = np.asarray(eps, dtype=np.float64)
    if depth < 2:
        raise ValueError(f"depth must be at least 2, got {depth}")
    if depth == 2:
        return np.log(sigma / eps**2) / (2 * sigma)
    return eps ** (2 - depth) / ((depth - 2) * sigma)
