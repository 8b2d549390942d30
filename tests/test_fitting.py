"""Tests of dlncore.fitting."""

import numpy as np
import pytest

from dlncore.fitting import loglog_slope


def test_loglog_slope_recovers_power():
    x = np.geomspace(1e-4, 1e-1, 7)
    assert loglog_slope(x, 3.0 * x**1.5) == pytest.approx(1.5, abs=1e-12)
    assert loglog_slope(x, 0.5 / x**2) == pytest.approx(-2.0, abs=1e-12)


def test_loglog_slope_leaves_out_unmeasured_points():
    x = np.geomspace(1.0, 100.0, 5)
    y = 2.0 * x**0.5
    y[1], y[3] = np.nan, 0.0  # a diverged and a zero measurement
    assert loglog_slope(x, y) == pytest.approx(0.5, abs=1e-12)
    assert np.isnan(loglog_slope([1.0, 2.0], [2.0, np.inf]))
    assert np.isnan(loglog_slope([1.0], [2.0]))
    with pytest.raises(ValueError, match="same shape"):
        loglog_slope([1.0, 2.0], [1.0, 2.0, 3.0])


def test_first_crossing_loglog_interpolates_between_neighbours():
    from dlncore.fitting import first_crossing_loglog

    x = np.array([1.0, 10.0, 100.0, 1000.0])
    y = np.array([1.0, 1e-1, 1e-3, 1e-2])  # a power law y = x^-1, then x^-2, then a rise
    assert first_crossing_loglog(x, y, 1e-2) == pytest.approx(10**1.5, rel=1e-12)
    assert first_crossing_loglog(x, y, 2.0) == 1.0  # already below at the first point
    assert np.isnan(first_crossing_loglog(x, y, 1e-4))  # never below
    # the first crossing counts, not a later one
    assert first_crossing_loglog(x, y, 0.5) == pytest.approx(10 ** np.log10(2), rel=1e-12)
