"""Metrics against closed forms and exact identities."""

import numpy as np
import pytest

import dlncore as dc
from dlncore.metrics import balancedness
from tests.conftest import naive_gradients


def test_drift_identity_holds_exactly_for_one_step(problem):
    w0 = dc.init.gaussian([5, 3, 6, 4], 0.7, seed=3)
    eta = 0.05
    grads = naive_gradients(problem.X, problem.Y, w0)
    w1 = dc.gd(problem, w0, eta, 1).weights
    for d0, d1, j in zip(balancedness(w0), balancedness(w1), range(2), strict=True):
        g_lo, g_hi = grads[j], grads[j + 1]
        np.testing.assert_allclose(d1 - d0, eta**2 * (g_hi.T @ g_hi - g_lo @ g_lo.T), atol=1e-13)


def test_metrics_against_closed_forms():
    ws = [np.diag([3.0, 1.0, 0.0]), np.diag([2.0, 2.0, 2.0])]
    np.testing.assert_allclose(dc.metrics.singular_values(ws), [6, 2, 0])
    assert dc.metrics.numerical_rank(ws) == 2
    p = np.array([6, 2]) / 8
    assert dc.metrics.effective_rank(ws) == pytest.approx(np.exp(-np.sum(p * np.log(p))))
    assert dc.metrics.max_factor_norm(ws) == 3.0 and dc.metrics.end_to_end_norm(ws) == 6.0
    # D_1 = W_2ᵀW_2 − W_1W_1ᵀ = diag(4 − 9, 4 − 1, 4 − 0)
    assert dc.metrics.imbalance(ws) == pytest.approx(5.0)
    assert dc.metrics.imbalance_drift(ws, ws) == 0.0


def test_registry_names_the_builtin_metrics_and_binds_the_start():
    from dlncore.metrics import BUILTIN_METRICS, STEP_METRICS, weight_metrics

    start = dc.init.gaussian([3, 4, 2], 0.5, seed=0)
    later = dc.init.gaussian([3, 4, 2], 0.5, seed=1)
    funcs = weight_metrics(BUILTIN_METRICS, start)
    assert set(funcs) == set(BUILTIN_METRICS) - set(STEP_METRICS)  # step metrics: by the caller
    assert funcs["imbalance_drift"](start) == 0.0
    assert funcs["imbalance_drift"](later) == dc.metrics.imbalance_drift(later, start)
    assert funcs["end_to_end_norm"] is dc.metrics.end_to_end_norm
    own = {"trace": lambda w: np.trace(dc.end_to_end(w))}
    assert weight_metrics(own, start) == own
    with pytest.raises(ValueError, match="unknown metric 'speed'; known: grad_norm"):
        weight_metrics(["imbalance", "speed"], start)


def test_imbalance_drift_is_the_spectral_norm_of_the_change_of_d():
    ws = dc.init.gaussian([4, 3, 5, 2], 0.7, seed=3, batch=6)
    start = dc.init.gaussian([4, 3, 5, 2], 0.7, seed=4, batch=6)
    pairs = zip(dc.metrics.balancedness(ws), dc.metrics.balancedness(start), strict=True)
    by_svd = np.max([np.linalg.norm(d - d0, ord=2, axis=(-2, -1)) for d, d0 in pairs], axis=0)
    assert by_svd.shape == (6,) and np.all(by_svd > 0.1)
    np.testing.assert_allclose(dc.metrics.imbalance_drift(ws, start), by_svd, rtol=1e-12)
