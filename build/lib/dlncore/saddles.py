"""The saddle at the origin: its Hessian spectrum and the time gradient descent needs to leave it.

The origin ``W_1 = ⋯ = W_N = 0`` is a critical point of ``L^N`` for ``N ≥ 2``. For ``N = 2`` the
Hessian there has eigenvalues ``±σ_i(Σyx)`` (a strict saddle); for ``N ≥ 3`` it is zero (a
non-strict saddle). Near the origin gradient descent leaves exponentially fast for ``N = 2``
(escape time ``∝ log(1/ε)``) and polynomially slowly for ``N ≥ 3`` (``∝ ε^{−(N−2)}``).
These are the book's derivations, not statements of the paper (chapters 4 and 5).
:func:`escape_scan` measures the escape time of near-origin starts at several scales.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.integrate import quad

from dlncore.descent import step_schedule
from dlncore.fitting import loglog_slope
from dlncore.init import gaussian
from dlncore.iterates import Iterates
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

    Runs ``W_j(k+1) = W_j(k) − η ∇_{W_j} L^N(W(k))`` (the steps of :func:`dlncore.gd`) and
    stops as soon as every start has escaped (or after ``max_steps`` steps).

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
    if eta.ndim == 1 and batch is not None and eta.shape == (batch,):
        eta = eta.reshape(1, batch)  # one constant step per start
    elif eta.ndim != 0:
        raise ValueError(f"step_size must be a number or have shape (B,); got {eta.shape}")
    eta_of = step_schedule(eta, max_steps, batch, problem.dtype)
    out = np.full(bshape, np.nan)
    waiting = np.ones(bshape, dtype=bool)  # not escaped yet
    huge = np.finfo(np.float64).max  # a non-finite loss freezes its start
    it = Iterates(problem.loss_and_gradients, ws, eta_of, int(max_steps), huge)
    thr = None if threshold is None else np.broadcast_to(np.asarray(threshold, float), bshape)
    for state in it.visit():
        loss = np.asarray(state.loss, dtype=np.float64)
        if thr is None:
            thr = fraction * loss
        done = waiting & state.active & (loss <= thr)
        out[done] = state.k
        waiting &= ~done
        if not np.any(waiting & state.active):
            break
    return out if batch is not None else np.float64(out)


@dataclass(frozen=True)
class EscapeScan:
    """Escape iterations of near-origin starts ``ε G`` at several scales ``ε``.

    Attributes
    ----------
    scales : array (S,)
        The scales ``ε``.
    times : array (S, R)
        Escape iteration of each of the ``R`` starts per scale (NaN: censored).
    threshold : float
        The loss level that counts as escaped.
    """

    scales: np.ndarray
    times: np.ndarray
    threshold: float

    @property
    def start_scales(self) -> np.ndarray:
        """The scale of every start, shape ``(S·R,)`` (in the order of ``times.ravel()``)."""
        return np.repeat(self.scales, self.times.shape[1])

    @property
    def median(self) -> np.ndarray:
        """Median escape iteration per scale, censored starts counted as ``+inf``, shape (S,)."""
        return np.median(np.where(np.isnan(self.times), np.inf, self.times), axis=1)

    @property
    def censored(self) -> int:
        """Number of starts that did not escape."""
        return int(np.isnan(self.times).sum())

    def log_slope(self) -> float:
        """Least-squares slope of the median against ``log(1/ε)`` over the scales whose median
        is finite (NaN with fewer than two): the law ``k ≈ a log(1/ε) + b`` of a strict saddle."""
        ok = np.isfinite(self.median)
        if ok.sum() < 2:
            return float("nan")
        return float(np.polyfit(np.log(1 / self.scales[ok]), self.median[ok], 1)[0])

    def power(self) -> float:
        """Log–log slope of the median against ``ε``: the law ``k ∝ ε^p`` (``p = −(N − 2)``)."""
        return loglog_slope(self.scales, self.median)


def escape_scan(
    problem: Problem,
    dims: Sequence[int],
    scales: Sequence[float] | np.ndarray,
    starts: int,
    step_size: float,
    max_steps: int,
    threshold: float,
    seed: int,
) -> EscapeScan:
    """:func:`escape_times` of ``starts`` starts ``ε G`` per scale ``ε``, in one batched run.

    ``G`` has independent ``N(0, 1)`` entries (:func:`dlncore.init.gaussian` with ``seed`` and
    batch ``S · starts``, the starts of one scale consecutive); widths ``dims``.
    """
    scales = np.asarray(scales, dtype=np.float64)
    if scales.ndim != 1 or scales.size == 0 or np.any(~(scales > 0)):
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {scales!r}")
    every = np.repeat(scales, starts)
    base = gaussian(dims, 1.0, seed=seed, batch=every.size)
    near_origin = [w * every[:, None, None] for w in base]
    k = escape_times(problem, near_origin, step_size, max_steps, threshold=threshold)
    return EscapeScan(scales, k.reshape(scales.size, starts), float(threshold))


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
