"""Synthetic regression problems ``Y = A X + noise`` with a teacher ``A`` of chosen rank."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dlncore.problem import Problem


def teacher_spectrum(rank: int, kind: str = "linear", top: float = 1.0) -> np.ndarray:
    """Singular values of a rank-``rank`` teacher, descending from ``top``.

    ``"linear"``: ``top · (rank − i) / rank`` for ``i = 0..rank−1`` (distinct, evenly spaced);
    ``"geometric"``: ``top · 2^{−i}``; ``"flat"``: all equal ``top``.
    """
    if rank < 0:
        raise ValueError(f"rank must be non-negative, got {rank}")
    i = np.arange(rank)
    if kind == "linear":
        return top * (rank - i) / max(rank, 1)
    if kind == "geometric":
        return top * 0.5**i
    if kind == "flat":
        return np.full(rank, float(top))
    raise ValueError(f"unknown spectrum kind {kind!r}; use 'linear', 'geometric' or 'flat'")


def synthetic_data(
    d_x: int,
    d_y: int,
    m: int,
    spectrum: Sequence[float] | np.ndarray,
    seed: int,
    noise: float = 0.0,
    input_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian inputs and targets of a random teacher with the given singular values.

    ``X`` (``d_x × m``) has i.i.d. ``N(0, input_scale²/m)`` entries, so ``X Xᵀ ≈ input_scale² I``
    for ``m ≫ d_x``; the teacher is ``A = U diag(spectrum) Vᵀ`` with Haar-random ``U``, ``V``;
    ``Y = A X + noise · N(0, 1/m)``. Returns ``(X, Y, A)``.
    """
    spectrum = np.asarray(spectrum, dtype=np.float64)
    k = spectrum.size
    if k > min(d_x, d_y):
        raise ValueError(f"{k} singular values do not fit a {d_y} × {d_x} teacher")
    if np.any(spectrum < 0) or not np.all(np.isfinite(spectrum)):
        raise ValueError("teacher singular values must be finite and non-negative")
    if noise < 0 or not np.isfinite(noise):
        raise ValueError(f"noise must be finite and non-negative, got {noise!r}")
    rng = np.random.default_rng(seed)
    X = input_scale * rng.standard_normal((d_x, m)) / np.sqrt(m)
    U, _ = np.linalg.qr(rng.standard_normal((d_y, d_y)))
    V, _ = np.linalg.qr(rng.standard_normal((d_x, d_x)))
    A = (U[:, :k] * spectrum) @ V[:, :k].T
    Y = A @ X + noise * rng.standard_normal((d_y, m)) / np.sqrt(m)
    return X, Y, A


def synthetic_problem(
    d_x: int,
    d_y: int,
    m: int,
    rank: int,
    seed: int,
    spectrum: str | Sequence[float] = "linear",
    noise: float = 0.0,
    top: float = 1.0,
    input_scale: float = 1.0,
    dtype: np.dtype | type = np.float64,
) -> Problem:
    """A :class:`Problem` from :func:`synthetic_data` with a rank-``rank`` teacher.

    ``spectrum`` is a kind for :func:`teacher_spectrum` (scaled by ``top``) or explicit
    singular values (then ``rank`` must equal their number).
    """
    if isinstance(spectrum, str):
        values = teacher_spectrum(rank, spectrum, top)
    else:
        values = np.asarray(spectrum, dtype=np.float64)
        if values.size != rank:
            raise ValueError(f"{values.size} singular values given for rank {rank}")
    X, Y, _ = synthetic_data(d_x, d_y, m, values, seed, noise, input_scale)
    return Problem(X, Y, dtype=dtype)
