"""Synthetic data and teacher spectra."""

import matplotlib

matplotlib.use("Agg")


import numpy as np  # noqa: E402
import pytest  # noqa: E402

import dlncore as dc  # noqa: E402
import dlncore.plotting  # noqa: E402


def test_teacher_spectra():
    np.testing.assert_allclose(dc.teacher_spectrum(4, "linear", 2.0), [2.0, 1.5, 1.0, 0.5])
    np.testing.assert_allclose(dc.teacher_spectrum(3, "geometric"), [1.0, 0.5, 0.25])
    np.testing.assert_allclose(dc.teacher_spectrum(2, "flat", 3.0), [3.0, 3.0])
    with pytest.raises(ValueError, match="unknown spectrum kind 'cubic'"):
        dc.teacher_spectrum(2, "cubic")


def test_synthetic_data_has_the_requested_teacher_and_scale():
    X, Y, A = dc.synthetic_data(6, 4, 20_000, [3.0, 1.0], seed=5, input_scale=2.0)
    np.testing.assert_allclose(np.linalg.svd(A, compute_uv=False)[:3], [3.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(Y, A @ X, atol=1e-12)  # noiseless
    np.testing.assert_allclose(X @ X.T, 4.0 * np.eye(6), atol=0.15)  # ≈ input_scale² I
    _, noisy, _ = dc.synthetic_data(6, 4, 20_000, [3.0, 1.0], seed=5, noise=0.5, input_scale=2.0)
    assert np.sum((noisy - Y) ** 2) == pytest.approx(0.25 * 4, rel=0.05)  # noise² · d_y
    with pytest.raises(ValueError, match="3 singular values do not fit a 2 × 6 teacher"):
        dc.synthetic_data(6, 2, 10, [1.0, 1.0, 1.0], seed=0)


def test_noiseless_problem_has_zero_optimum_and_the_teacher_spectrum_after_whitening():
    X, Y, A = dc.synthetic_data(5, 5, 400, dc.teacher_spectrum(5), seed=2)
    problem = dc.Problem(X, Y)
    assert problem.optimal_loss(5) < 1e-20
    w, V = np.linalg.eigh(X @ X.T)
    expected = np.linalg.svd(A @ (V * np.sqrt(w)) @ V.T, compute_uv=False)  # Q = A Σxx^{1/2}
    np.testing.assert_allclose(problem.q_singular_values, expected, rtol=1e-12)
