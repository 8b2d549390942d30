"""Weight chains of a deep linear network.

A network of depth ``N`` is a list ``[W_1, ..., W_N]``; ``W_j`` has shape ``(d_j, d_{j-1})``
or, for ``B`` independent starts handled at once, ``(B, d_j, d_{j-1})``. The end-to-end matrix
is ``W = W_N ... W_1`` of shape ``(d_N, d_0)`` (or ``(B, d_N, d_0)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Weights = list[np.ndarray]


def check_weights(
    weights: Sequence[np.ndarray],
    d_x: int | None = None,
    d_y: int | None = None,
    dtype: np.dtype | type | None = None,
) -> Weights:
    """Validate a weight chain and return it as a list of float arrays (copies).

    Parameters
    ----------
    weights : sequence of arrays
        ``[W_1, ..., W_N]``, each of shape ``(d_j, d_{j-1})`` or ``(B, d_j, d_{j-1})``.
    d_x, d_y : int, optional
        Required input width ``d_0`` and output width ``d_N``.
    dtype : dtype, optional
        Cast to this dtype (default: float64).

    Raises
    ------
    ValueError
        Empty chain, mixed batch shapes, widths that do not chain, a chain that does not fit
        ``d_x``/``d_y``, or non-finite entries.
    """
    if isinstance(weights, np.ndarray) or len(weights) == 0:
        raise ValueError("weights must be a non-empty list [W_1, ..., W_N] of matrices")
    dtype = np.float64 if dtype is None else dtype
    out = [np.array(w, dtype=dtype) for w in weights]
    ndim = out[0].ndim
    if ndim not in (2, 3):
        raise ValueError(
            f"W_1 has shape {out[0].shape}; expected (d_1, d_0) or (B, d_1, d_0) "
            "with a leading batch axis"
        )
    for j, w in enumerate(out, start=1):
        if w.ndim != ndim or w.shape[:-2] != out[0].shape[:-2]:
            raise ValueError(
                f"W_{j} has shape {w.shape} but W_1 has shape {out[0].shape}: "
                "all factors need the same batch shape"
            )
        if j > 1 and w.shape[-1] != out[j - 2].shape[-2]:
            raise ValueError(
                f"widths do not chain: W_{j} has shape {w.shape[-2:]} (needs {w.shape[-1]} "
                f"inputs) but W_{j - 1} has {out[j - 2].shape[-2]} outputs"
            )
        if not np.all(np.isfinite(w)):
            raise ValueError(f"W_{j} has non-finite entries")
    if d_x is not None and out[0].shape[-1] != d_x:
        raise ValueError(f"W_1 takes {out[0].shape[-1]} inputs but the data have d_x = {d_x}")
    if d_y is not None and out[-1].shape[-2] != d_y:
        raise ValueError(f"W_N gives {out[-1].shape[-2]} outputs but the data have d_y = {d_y}")
    return out


def widths(weights: Sequence[np.ndarray]) -> list[int]:
    """Widths ``[d_0, d_1, ..., d_N]`` of a weight chain."""
    return [weights[0].shape[-1]] + [w.shape[-2] for w in weights]


def batch_size(weights: Sequence[np.ndarray]) -> int | None:
    """Number of starts ``B`` of a batched chain, or ``None`` for a single chain."""
    return weights[0].shape[0] if weights[0].ndim == 3 else None


def prefix_products(weights: Sequence[np.ndarray]) -> Weights:
    """Products ``[W_1, W_2 W_1, ..., W_N ... W_1]``; the last one is the end-to-end matrix."""
    out = [weights[0]]
    for w in weights[1:]:
        out.append(w @ out[-1])
    return out


def end_to_end(weights: Sequence[np.ndarray]) -> np.ndarray:
    """End-to-end matrix ``W = W_N ... W_1``, shape ``(d_N, d_0)`` or ``(B, d_N, d_0)``."""
    return prefix_products(weights)[-1]


def chain(weights: Sequence[np.ndarray], first: int, last: int) -> np.ndarray:
    """Product ``W_last ... W_first`` (1-based, inclusive); an identity when ``last < first``.

    The identity has size ``d_{first-1}`` and the batch shape of the chain.
    """
    if last < first:
        d = weights[first - 1].shape[-1] if first <= len(weights) else weights[-1].shape[-2]
        eye = np.eye(d, dtype=weights[0].dtype)
        return np.broadcast_to(eye, weights[0].shape[:-2] + (d, d)).copy()
    out = weights[first - 1]
    for w in weights[first:last]:
        out = w @ out
    return out
