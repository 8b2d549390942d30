"""The least-squares problem ``L^N(W_1, ..., W_N) = ½‖Y − W_N ⋯ W_1 X‖_F²``.

The data enter a gradient step only through ``Σxx = X Xᵀ``, ``Σyx = Y Xᵀ`` and ``‖Y‖_F²``, so a
step costs ``O(N)`` products of width-sized matrices, independent of the number of samples ``m``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from itertools import combinations
from math import comb

import numpy as np

from dlncore.network import Weights, check_weights, end_to_end, prefix_products


class Problem:
    """Data ``X`` (``d_x × m``) and targets ``Y`` (``d_y × m``) of a deep linear regression.

    Parameters
    ----------
    X : array, shape (d_x, m)
        Inputs, one sample per column. ``X Xᵀ`` must be invertible (``m ≥ d_x``, full row rank).
    Y : array, shape (d_y, m)
        Targets.
    dtype : dtype, optional
        Floating type of the weights and of every computation (default float64). The covariances
        are formed in float64 and then rounded to ``dtype``.

    Attributes
    ----------
    sxx : array (d_x, d_x)
        ``X Xᵀ``.
    syx : array (d_y, d_x)
        ``Y Xᵀ``.
    y_norm2 : float
        ``‖Y‖_F²``.
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray, dtype: np.dtype | type = np.float64):
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if X.ndim != 2 or Y.ndim != 2:
            raise ValueError(
                f"X and Y must be matrices (features × samples); got shapes {X.shape}, {Y.shape}"
            )
        if X.shape[1] != Y.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} samples (columns) but Y has {Y.shape[1]}; they must match"
            )
        for name, a in (("X", X), ("Y", Y)):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} has non-finite entries")
        d_x, m = X.shape
        if m < d_x:
            raise ValueError(
                f"X Xᵀ is singular: X has m = {m} samples for d_x = {d_x} inputs (need m ≥ d_x)"
            )
        sxx = X @ X.T
        eig = np.linalg.eigvalsh(sxx)
        if eig[-1] <= 0 or eig[0] <= eig[-1] * d_x * np.finfo(np.float64).eps * 1e2:
            cond = np.inf if eig[0] <= 0 else eig[-1] / eig[0]
            raise ValueError(
                f"X Xᵀ is numerically singular (condition number {cond:.3g}; m = {m}, "
                f"d_x = {d_x}): X needs full row rank"
            )
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"dtype must be a floating type, got {self.dtype}")
        self.X = X.astype(self.dtype)
        self.Y = Y.astype(self.dtype)
        self.sxx = sxx.astype(self.dtype)
        self.syx = (Y @ X.T).astype(self.dtype)
        self.y_norm2 = float(np.sum(Y * Y))
        self._sxx_eig = eig

    @property
    def d_x(self) -> int:
        return self.X.shape[0]

    @property
    def d_y(self) -> int:
        return self.Y.shape[0]

    @property
    def m(self) -> int:
        return self.X.shape[1]

    def __repr__(self) -> str:
        return f"Problem(d_x={self.d_x}, d_y={self.d_y}, m={self.m}, dtype={self.dtype})"

    # ------------------------------------------------------------------ loss and gradients
    def check(self, weights: Sequence[np.ndarray]) -> Weights:
        """Validate a weight chain against the data widths; return float copies in ``dtype``."""
        return check_weights(weights, self.d_x, self.d_y, self.dtype)

    def loss(self, weights: Sequence[np.ndarray], exact: bool = True) -> np.ndarray:
        """``L^N = ½‖Y − W_N⋯W_1 X‖_F²``: a float, or one value per start, shape ``(B,)``.

        ``exact=True`` evaluates the residual through ``X`` (accurate near zero);
        ``exact=False`` uses the covariance form, which is independent of ``m`` but loses about
        ``‖Y‖_F² · eps`` of absolute accuracy.
        """
        weights = self.check(weights)
        return self.end_to_end_loss(end_to_end(weights), exact=exact)

    def end_to_end_loss(self, W: np.ndarray, exact: bool = True) -> np.ndarray:
        """``L^1(W) = ½‖Y − W X‖_F²`` for ``W`` of shape ``(d_y, d_x)`` or ``(B, d_y, d_x)``."""
        W = np.asarray(W, dtype=self.dtype)
        if exact:
            r = W @ self.X - self.Y
            out = 0.5 * np.sum(r.astype(np.float64) ** 2, axis=(-2, -1))
        else:
            out = self._trace_loss(W, W @ self.sxx)
        return out if np.ndim(out) else float(out)

    def _trace_loss(self, W: np.ndarray, WS: np.ndarray) -> np.ndarray:
        # ½ tr(W Σxx Wᵀ) − tr(W Σyxᵀ) + ½‖Y‖²
        return 0.5 * np.sum(W * (WS - 2 * self.syx), axis=(-2, -1)) + 0.5 * self.y_norm2

    def loss_and_gradients(
        self, weights: Weights, scale: float | np.ndarray = 1.0
    ) -> tuple[np.ndarray, Weights]:
        """Covariance-form loss and gradients ``∇_{W_j} L^N = A_jᵀ (W Σxx − Σyx) B_jᵀ``.

        ``A_j = W_N⋯W_{j+1}``, ``B_j = W_{j−1}⋯W_1``. Uses ``3N − 2`` matrix products and does
        not validate ``weights`` (see :meth:`gradients` for the checked version). The gradients
        come multiplied by ``scale`` (a number, or shape ``(B, 1, 1)``): gradient descent folds
        its step sizes into the backward pass this way.
        """
        mm = np.dot if weights[0].ndim == 2 else np.matmul  # np.dot: less overhead in 2-D
        prefix = prefix_products(weights)
        W = prefix[-1]
        E = mm(W, self.sxx) - self.syx  # W Σxx − Σyx
        if W.ndim == 2:
            loss = 0.5 * np.vdot(W, E - self.syx) + 0.5 * self.y_norm2
        else:
            loss = 0.5 * np.sum(W * (E - self.syx), axis=(-2, -1)) + 0.5 * self.y_norm2
        T = E * scale  # scale · A_jᵀ E, for j = N
        n = len(weights)
        grads: Weights = [None] * n  # type: ignore[list-item]
        for j in range(n - 1, 0, -1):
            grads[j] = mm(T, prefix[j - 1].mT)
            T = mm(weights[j].mT, T)
        grads[0] = T
        return loss, grads

    def gradients(self, weights: Sequence[np.ndarray]) -> Weights:
        """Gradients ``[∇_{W_1} L^N, ..., ∇_{W_N} L^N]``, same shapes as ``weights``."""
        return self.loss_and_gradients(self.check(weights))[1]

    # ------------------------------------------------------------------ theory
    @cached_property
    def _q_svd(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, V = np.linalg.eigh(self.sxx.astype(np.float64))
        inv_sqrt = (V / np.sqrt(w)) @ V.T
        Q = self.syx.astype(np.float64) @ inv_sqrt
        U, s, Vt = np.linalg.svd(Q, full_matrices=False)
        return U, s, Vt @ inv_sqrt

    @cached_property
    def _least_squares_loss(self) -> float:
        W = np.linalg.solve(self.sxx.astype(np.float64), self.syx.astype(np.float64).T).T
        r = W @ self.X.astype(np.float64) - self.Y.astype(np.float64)
        return 0.5 * float(np.sum(r * r))

    @property
    def q_singular_values(self) -> np.ndarray:
        """The ``min(d_y, d_x)`` singular values ``σ_1 ≥ σ_2 ≥ …`` of ``Q = Σyx Σxx^{−1/2}``."""
        return self._q_svd[1].copy()

    @property
    def max_rank(self) -> int:
        return min(self.d_y, self.d_x)

    def _check_rank(self, rank: int) -> int:
        if isinstance(rank, bool) or not isinstance(rank, int | np.integer):
            raise ValueError(f"rank must be an integer, got {rank!r}")
        if not 0 <= rank <= self.max_rank:
            raise ValueError(
                f"rank {rank} is outside 0..{self.max_rank} = min(d_y, d_x) for this problem"
            )
        return int(rank)

    def optimal_loss(self, rank: int) -> float:
        """``L*_k = min{L^1(W) : rank W ≤ k} = ½(‖Y‖² − Σ_{i≤k} σ_i²)``.

        Evaluated as the least-squares residual plus ``½ Σ_{i>k} σ_i²``, which stays accurate
        when the value is near zero.
        """
        k = self._check_rank(rank)
        s = self._q_svd[1]
        return self._least_squares_loss + 0.5 * float(np.sum(s[k:] ** 2))

    def minimizer(self, rank: int) -> np.ndarray:
        """``W_k = [Q]_k Σxx^{−1/2}``, the minimizer of ``L^1`` over rank ≤ k, shape (d_y, d_x)."""
        k = self._check_rank(rank)
        U, s, R = self._q_svd
        return (U[:, :k] * s[:k]) @ R[:k]

    def critical_values(self, rank: int, max_count: int = 100_000) -> np.ndarray:
        """Critical values of ``L^1`` restricted to rank-``k`` matrices, sorted ascending.

        They are ``½(‖Y‖² − Σ_{i∈S} σ_i²)`` over index sets ``|S| = k`` (distinct ``σ_i``).
        """
        k = self._check_rank(rank)
        s2 = self._q_svd[1] ** 2
        count = comb(len(s2), k)
        if count > max_count:
            raise ValueError(f"{count} index sets of size {k}: more than max_count = {max_count}")
        total = float(np.sum(s2))
        vals = [
            self._least_squares_loss + 0.5 * (total - float(np.sum(s2[list(S)])))
            for S in combinations(range(len(s2)), k)
        ]
        return np.unique(np.array(vals))
