"""A compiled gradient-descent step for one chain of small width (numba).

At widths ``d ≤ 20`` a numpy step is bound by the overhead of its ~13 calls, not by
arithmetic. :class:`CompiledChain` keeps one chain (weights and moves) in flat buffers and runs
the same covariance-form step (:meth:`dlncore.Problem.loss_and_gradients`, matrix products by
BLAS) and the whole loop between two visits of :class:`~dlncore.iterates.Iterates` in compiled
code. :func:`dlncore.gd` uses it automatically where
:func:`dlncore.descent.compiled_step_applies`; results agree with the numpy path to rounding
(``benchmarks/bench_step.py`` measures the speed; ``tests/test_compiled.py`` the agreement).
The kernels are compiled once and cached on disk (``cache=True``, in ``__pycache__``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from dlncore.iterates import Iterates
from dlncore.network import Weights


@njit(cache=True)
def _views(buf, dims, offsets, j):
    return buf[offsets[j] : offsets[j + 1]].reshape((dims[j + 1], dims[j]))


@njit(cache=True)
def _pairwise_sum(a):
    """``Σ a`` in numpy's order (pairwise, blocks of 8 up to 128), so sums match numpy's bits."""
    n = a.size
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    if n <= 128:
        r = a[:8].copy()
        i = 8
        while i < n - n % 8:
            for j in range(8):
                r[j] += a[i + j]
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            res += a[i]
            i += 1
        return res
    half = n // 2
    half -= half % 8
    return _pairwise_sum(a[:half]) + _pairwise_sum(a[half:])


@njit(cache=True)
def _move_length(m, offsets):
    """:func:`dlncore.iterates.move_length` of the moves in ``m``, to the bit."""
    total = 0.0
    for j in range(offsets.size - 1):
        part = m[offsets[j] : offsets[j + 1]]
        total += _pairwise_sum(part * part)
    return np.sqrt(total)


@njit(cache=True)
def _loss_and_moves(w, m, work, dims, offsets, sxx, syx, y2, scale):
    """Covariance-form loss at ``w``; writes ``scale · ∇L`` into ``m`` (see Problem).

    The same products as :meth:`dlncore.Problem.loss_and_gradients`, in the buffers of
    ``work``: prefix products ``W_j⋯W_1`` (level ``j``, shape ``(d_j, d_0)``), the backward
    products ``scale · A_jᵀ E`` (same shapes), ``E = W Σxx − Σyx`` and ``E − Σyx``.
    """
    n = dims.size - 1
    d0, dn = dims[0], dims[n]
    size = 0
    for j in range(1, n + 1):
        size += dims[j] * d0
    prefix, back = work[:size], work[size : 2 * size]
    E = work[2 * size : 2 * size + dn * d0].reshape((dn, d0))
    R = work[2 * size + dn * d0 : 2 * size + 2 * dn * d0].reshape((dn, d0))
    levels = np.zeros(n + 1, np.int64)
    for j in range(n):
        levels[j + 1] = levels[j] + dims[j + 1] * d0
    P = [_views(w, dims, offsets, 0)]
    Tb = [back[levels[0] : levels[1]].reshape((dims[1], d0))]
    for j in range(1, n):
        level = prefix[levels[j] : levels[j + 1]].reshape((dims[j + 1], d0))
        np.dot(_views(w, dims, offsets, j), P[j - 1], level)
        P.append(level)
        Tb.append(back[levels[j] : levels[j + 1]].reshape((dims[j + 1], d0)))
    W = P[n - 1]
    np.dot(W, sxx, E)
    for a in range(dn):
        for b in range(d0):
            E[a, b] -= syx[a, b]
            R[a, b] = E[a, b] - syx[a, b]
    loss = 0.5 * np.vdot(W.ravel(), R.ravel()) + 0.5 * y2
    T = Tb[n - 1]
    for a in range(dn):
        for b in range(d0):
            T[a, b] = E[a, b] * scale
    for j in range(n - 1, 0, -1):
        np.dot(T, P[j - 1].T, _views(m, dims, offsets, j))
        np.dot(_views(w, dims, offsets, j).T, T, Tb[j - 1])
        T = Tb[j - 1]
    _views(m, dims, offsets, 0)[:, :] = T
    return loss


@njit(cache=True)
def _advance(
    w, m, work, dims, offsets, sxx, syx, y2, eta, k, target, steps, threshold, clock, track
):
    """Steps ``k → target``: apply the moves, evaluate the next ones; stop at divergence.

    ``clock = [t_k, path_k]`` is updated in place. Returns ``(k, loss, diverged)``.
    """
    loss = np.nan
    while k < target:
        w -= m
        clock[0] += eta
        if track:
            clock[1] += _move_length(m, offsets)
        k += 1
        scale = eta if k < steps else 1.0
        loss = _loss_and_moves(w, m, work, dims, offsets, sxx, syx, y2, scale)
        if not loss <= threshold:
            return k, loss, True
    return k, loss, False


class CompiledChain:
    """One chain in flat buffers, stepped by the compiled kernels.

    Parameters
    ----------
    sxx, syx : arrays
        ``X Xᵀ`` and ``Y Xᵀ`` (float64).
    y_norm2 : float
        ``‖Y‖_F²``.
    weights : list of arrays
        ``W(0)`` (unbatched, float64); copied into the flat buffer.
    eta : float
        The constant step size.

    Attributes
    ----------
    weights, moves : list of arrays
        Views of the flat buffers (``W(k)`` and ``M(k)``), shapes ``(d_j, d_{j−1})``.
    """

    def __init__(
        self,
        sxx: np.ndarray,
        syx: np.ndarray,
        y_norm2: float,
        weights: Sequence[np.ndarray],
        eta: float,
    ):
        self.dims = np.array([weights[0].shape[1]] + [w.shape[0] for w in weights], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum([w.size for w in weights])]).astype(np.int64)
        self._w = np.concatenate([np.ravel(w) for w in weights]).astype(np.float64)
        self._m = np.zeros_like(self._w)
        columns = weights[0].shape[1]
        self._work = np.zeros(2 * columns * (sum(self.dims[1:]) + self.dims[-1]))
        self.weights: Weights = self._split(self._w)
        self.moves: Weights = self._split(self._m)
        self.sxx = np.ascontiguousarray(sxx, dtype=np.float64)
        self.syx = np.ascontiguousarray(syx, dtype=np.float64)
        self.y2 = float(y_norm2)
        self.eta = float(eta)
        self._clock = np.zeros(2)

    def _split(self, buf: np.ndarray) -> Weights:
        return [
            buf[a:b].reshape(self.dims[j + 1], self.dims[j])
            for j, (a, b) in enumerate(zip(self.offsets[:-1], self.offsets[1:], strict=True))
        ]

    def step(self, weights: Weights, eta: np.ndarray) -> tuple[np.ndarray, Weights]:
        """The :data:`~dlncore.iterates.StepFunction` on the buffers (``weights`` are ours)."""
        args = (self.dims, self.offsets, self.sxx, self.syx, self.y2, float(eta))
        loss = _loss_and_moves(self._w, self._m, self._work, *args)
        return np.float64(loss), self.moves

    def advance(self, it: Iterates, target: int) -> None:
        """Advance ``it`` (built on :meth:`step` and :attr:`weights`) to iteration ``target``."""
        if it.last or it.k >= target:
            return
        self._clock[:] = float(it.time), float(it.path)
        k, loss, _ = _advance(
            self._w,
            self._m,
            self._work,
            self.dims,
            self.offsets,
            self.sxx,
            self.syx,
            self.y2,
            self.eta,
            it.k,
            target,
            it.steps,
            float(it.threshold),
            self._clock,
            it.track_path,
        )
        it.time[...] = self._clock[0]
        it.path[...] = self._clock[1]
        eta = it.step_sizes(k) if k < it.steps else it.one
        it.settle(k, np.float64(loss), self.moves, eta)
