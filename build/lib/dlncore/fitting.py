"""Fits of measured curves: the order ``p`` of a power law ``y ∝ x^p``, and where a curve
first crosses a level."""

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


def first_crossing_loglog(x: np.ndarray, y: np.ndarray, level: float) -> float:
    """``x`` where ``y`` first falls below ``level``, interpolated linearly in ``(log y, log x)``
    between the two neighbouring points (``x[0]`` if ``y[0] < level``; NaN if never).

    Parameters
    ----------
    x, y : 1-d arrays of the same length, positive (``x``: e.g. iterations or losses; ``y``:
        e.g. losses or gradient norms, in recording order)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    below = np.flatnonzero(y < level)
    if below.size == 0:
        return float("nan")
    i = below[0]
    if i == 0:
        return float(x[0])
    log_x = np.log(x[i - 1 : i + 1])
    log_y = np.log(y[i - 1 : i + 1])
    return float(np.exp(np.interp(np.log(level), log_y[::-1], log_x[::-1])))
