"""Initializations ``[W_1(0), ..., W_N(0)]`` for widths ``dims = [d_0, d_1, ..., d_N]``.

Every random initialization takes an explicit ``seed`` and an optional ``batch`` size ``B``; with
``batch`` each factor gets a leading axis of length ``B`` (independent starts).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dlncore.metrics import end_to_end_norm
from dlncore.network import Weights, check_weights


def _check_dims(dims: Sequence[int]) -> list[int]:
    dims = [int(d) for d in dims]
    if len(dims) < 2 or min(dims) < 1:
        raise ValueError(f"dims must list at least two positive widths [d_0, ..., d_N], got {dims}")
    return dims


def _check_batch(batch: int | None) -> tuple[int, ...]:
    if batch is None:
        return ()
    if batch < 1:
        raise ValueError(f"batch must be a positive number of starts, got {batch}")
    return (int(batch),)


def _check_scale(scale: float) -> float:
    if not np.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be finite and non-negative, got {scale!r}")
    return float(scale)


def gaussian(dims: Sequence[int], scale: float, seed: int, batch: int | None = None) -> Weights:
    """Independent ``N(0, scale²)`` entries in every factor."""
    dims, lead, scale = _check_dims(dims), _check_batch(batch), _check_scale(scale)
    rng = np.random.default_rng(seed)
    return [
        scale * rng.standard_normal(lead + (dims[j + 1], dims[j])) for j in range(len(dims) - 1)
    ]


def _orthonormal(rng: np.random.Generator, lead: tuple[int, ...], rows: int, cols: int):
    """Haar-distributed matrices with orthonormal columns (rows ≥ cols) or rows (rows < cols)."""
    tall = rows >= cols
    a = rng.standard_normal(lead + ((rows, cols) if tall else (cols, rows)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
    return q if tall else np.swapaxes(q, -1, -2)


def orthogonal(
    dims: Sequence[int], seed: int, scale: float = 1.0, batch: int | None = None
) -> Weights:
    """``scale`` times Haar-random (semi-)orthogonal factors: every singular value is ``scale``."""
    dims, lead, scale = _check_dims(dims), _check_batch(batch), _check_scale(scale)
    rng = np.random.default_rng(seed)
    return [scale * _orthonormal(rng, lead, dims[j + 1], dims[j]) for j in range(len(dims) - 1)]


def identity(dims: Sequence[int], scale: float = 1.0, batch: int | None = None) -> Weights:
    """``scale`` times rectangular identities (deterministic)."""
    dims, lead, scale = _check_dims(dims), _check_batch(batch), _check_scale(scale)
    return [
        np.broadcast_to(scale * np.eye(dims[j + 1], dims[j]), lead + (dims[j + 1], dims[j])).copy()
        for j in range(len(dims) - 1)
    ]


def balanced(end_to_end: np.ndarray, dims: Sequence[int], seed: int | None = None) -> Weights:
    """Exactly balanced factors (``W_{j+1}ᵀ W_{j+1} = W_j W_jᵀ``) whose product is ``end_to_end``.

    With the SVD ``W = U S Vᵀ`` truncated to ``r = min(dims)``: ``W_N = U S^{1/N} Q_{N−1}ᵀ``,
    ``W_j = Q_j S^{1/N} Q_{j−1}ᵀ``, ``W_1 = Q_1 S^{1/N} Vᵀ``, with ``Q_j`` (``d_j × r``)
    orthonormal columns: random (``seed``) or the first ``r`` unit vectors (``seed=None``).
    ``end_to_end`` has shape ``(d_N, d_0)`` or ``(B, d_N, d_0)``.
    """
    dims = _check_dims(dims)
    W = np.asarray(end_to_end, dtype=np.float64)
    if W.ndim not in (2, 3) or W.shape[-2:] != (dims[-1], dims[0]):
        raise ValueError(f"end_to_end has shape {W.shape}; expected ({dims[-1]}, {dims[0]})")
    n = len(dims) - 1
    r = min(dims)
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    if np.any(s[..., r:] > 1e-12 * s[..., :1]):
        raise ValueError(f"end_to_end has rank > {r} = min(dims): no chain of these widths fits it")
    # Singular values at rounding level are zeros: their N-th roots would amplify the noise.
    s = np.where(s > max(W.shape[-2:]) * np.finfo(np.float64).eps * s[..., :1], s, 0.0)
    root = s[..., :r] ** (1.0 / n)
    lead = W.shape[:-2]
    rng = np.random.default_rng(seed) if seed is not None else None
    basis = []
    for d in dims[1:-1]:
        if rng is None:
            basis.append(np.broadcast_to(np.eye(d, r), lead + (d, r)))
        else:
            basis.append(_orthonormal(rng, lead, d, r))
    left = [*basis, U[..., :, :r]]  # output side of W_1 .. W_N
    right = [np.swapaxes(Vt[..., :r, :], -1, -2), *basis]  # input side of W_1 .. W_N
    return [
        (lo * root[..., None, :]) @ np.swapaxes(ri, -1, -2)
        for lo, ri in zip(left, right, strict=True)
    ]


def rank_deficient(
    dims: Sequence[int], rank: int, scale: float, seed: int, batch: int | None = None
) -> Weights:
    """Gaussian factors whose first factor is truncated to ``rank``, so ``rank W(0) ≤ rank``."""
    weights = gaussian(dims, scale, seed, batch)
    if not 0 <= rank <= min(dims):
        raise ValueError(f"rank {rank} is outside 0..{min(dims)} = min(dims)")
    U, s, Vt = np.linalg.svd(weights[0], full_matrices=False)
    weights[0] = (U[..., :, :rank] * s[..., None, :rank]) @ Vt[..., :rank, :]
    return weights


def perturb(weights: Sequence[np.ndarray], scale: float, seed: int) -> Weights:
    """``weights`` plus independent ``N(0, scale²)`` noise: a start near a given point."""
    weights = check_weights(weights)
    scale = _check_scale(scale)
    rng = np.random.default_rng(seed)
    return [w + scale * rng.standard_normal(w.shape) for w in weights]


def normalized_gaussian(dims: Sequence[int], seed: int, norm: float = 1.0) -> Weights:
    """Gaussian factors (entries ``N(0, 1/d_{j−1})``) rescaled by one common factor
    ``c = (norm / ‖W_N⋯W_1‖_op)^{1/N}`` so that the end-to-end matrix has spectral norm ``norm``.
    """
    if not (np.isfinite(norm) and norm > 0):
        raise ValueError(f"norm must be positive and finite, got {norm!r}")
    weights = gaussian(dims, 1.0, seed)
    weights = [w / np.sqrt(w.shape[-1]) for w in weights]
    c = (norm / float(end_to_end_norm(weights))) ** (1.0 / len(weights))
    return [c * w for w in weights]
