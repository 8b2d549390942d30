"""Fits of measured curves: the order ``p`` of a power law ``y ∝ x^p``."""

from __future__ import annotations

import numpy as np


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (the order of a power law ``y ∝ x^p``).

    Pairs where ``x`` or ``y`` is not positive and finite (a diverged or censored measurement)
    are left out; with fewer than two pairs left the slope is NaN.

    Parameters
    ----------
    x, y : arrays of the same shape
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])
