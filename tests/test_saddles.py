"""Tests of dlncore.saddles against dc.hessian, exact quadrature and scalar closed forms."""

import numpy as np
import pytest

import dlncore as dc
from dlncore.saddles import (
    escape_time_asymptotic,
    escape_times,
    origin_hessian_eigenvalues,
    scalar_escape_time,
)


def _problem() -> dc.Problem:
    return dc.synthetic_problem(4, 3, 40, rank=3, seed=3, noise=0.2)


@pytest.mark.parametrize("dims", [[4, 3], [4, 2, 3], [4, 5, 3], [4, 3, 2, 3], [4, 2, 2, 2, 3]])
def test_origin_hessian_matches_numerical_hessian(dims):
    problem = _problem()
    zeros = [np.zeros((dims[j + 1], dims[j])) for j in range(len(dims) - 1)]
    numeric = np.linalg.eigvalsh(dc.hessian(problem, zeros))
    predicted = origin_hessian_eigenvalues(problem, dims)
    assert predicted.shape == numeric.shape
    # both are computed in float64 from O(1) data: agreement to a few ulps of ‖Σ‖
    np.testing.assert_allclose(predicted, numeric, atol=1e-12)


def test_origin_hessian_n2_smallest_is_minus_sigma1():
    problem = _problem()
    values = origin_hessian_eigenvalues(problem, [4, 2, 3])
    s1 = np.linalg.norm(problem.syx, ord=2)
    assert values[0] == pytest.approx(-s1, rel=1e-14)
    assert values[-1] == pytest.approx(s1, rel=1e-14)


def test_scalar_escape_time_n2_closed_form():
    # logistic solution u(t) = σ / (1 + (σ/u0 − 1) e^{−2σt}) inverted at u*
    sigma, eps = 2.0, 0.05
    u0, u_star = eps**2, sigma - np.sqrt(2 * sigma**2 / 4)
    t = np.log((sigma / u0 - 1) / (sigma / u_star - 1)) / (2 * sigma)
    assert scalar_escape_time(2, eps, sigma) == pytest.approx(t, rel=1e-12)


@pytest.mark.parametrize("depth", [3, 4])
def test_scalar_escape_time_matches_ode_solution(depth):
    from scipy.integrate import solve_ivp

    sigma, eps = 1.5, 0.2
    t_star = scalar_escape_time(depth, eps, sigma)
    u_star = sigma - np.sqrt(2 * sigma**2 / 4)
    sol = solve_ivp(
        lambda t, w: (sigma - w**depth) * w ** (depth - 1),
        (0, 2 * t_star),
        [eps],
        rtol=1e-11,
        atol=1e-14,
        events=lambda t, w: w[0] ** depth - u_star,
    )
    assert sol.t_events[0][0] == pytest.approx(t_star, rel=1e-7)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_asymptotic_escape_time(depth):
    sigma = 1.0
    eps = np.array([1e-2, 1e-3]) if depth < 4 else np.array([3e-2, 1e-2])
    exact = np.array([scalar_escape_time(depth, e, sigma) for e in eps])
    approx = escape_time_asymptotic(depth, eps, sigma)
    if depth == 2:
        # T − log(σ/ε²)/(2σ) → log(u*/(σ − u*))/(2σ) with an O(ε²) error
        u_star = sigma - np.sqrt(2 * sigma**2 / 4)
        np.testing.assert_allclose(
            exact - approx, np.log(u_star / (sigma - u_star)) / (2 * sigma), atol=1e-3
        )
    else:
        # relative error O(ε^{N−2}) (the neglected O(1) part of the integral)
        np.testing.assert_allclose(exact, approx, rtol=2 * eps.max() ** (depth - 2) + 1e-3)


@pytest.mark.parametrize("depth,eps", [(2, 1e-2), (3, 0.1), (4, 0.3)])
def test_gd_escape_time_matches_flow(depth, eps):
    # GD is the explicit Euler scheme of the flow: relative error O(ησ) (first order), plus
    # the rounding of the escape to a whole iteration (≤ η / T relative).
    sigma, eta = 1.0, 2e-3
    problem = dc.Problem(np.array([[1.0]]), np.array([[sigma]]))
    t_flow = scalar_escape_time(depth, eps, sigma)
    k = escape_times(problem, [np.array([[eps]])] * depth, eta, 10**5, threshold=sigma**2 / 4)
    assert np.isfinite(k)
    assert abs(k * eta - t_flow) / t_flow <= 2 * eta * sigma + eta / t_flow


def test_escape_times_batched_and_censored():
    sigma, eta = 1.0, 1e-2
    problem = dc.Problem(np.array([[1.0]]), np.array([[sigma]]))
    eps = np.array([0.5, 0.1, 1e-3])
    ws = [e[:, None, None] * np.ones((3, 1, 1)) for e in [eps, eps]]
    k = escape_times(problem, ws, eta, max_steps=400, threshold=sigma**2 / 4)
    singles = [
        escape_times(problem, [np.array([[e]])] * 2, eta, 400, threshold=sigma**2 / 4) for e in eps
    ]
    np.testing.assert_array_equal(k, np.array(singles))
    assert np.isfinite(k[:2]).all() and np.isnan(k[2])  # T(1e-3)/η ≈ 660 > 400: censored
    # per-start step sizes: doubling η roughly halves the escape iteration
    k2 = escape_times(problem, ws, np.array([eta, 2 * eta, eta]), max_steps=400, threshold=0.25)
    assert k2[1] == pytest.approx(k[1] / 2, abs=2)


def test_escape_times_default_fraction():
    problem = _problem()
    ws = dc.init.orthogonal([4, 3, 3], seed=0, scale=0.05, batch=4)
    k = escape_times(problem, ws, 0.05, 5000)
    loss0 = problem.loss(ws)
    # re-run GD for exactly k steps on the first start: below half, one step earlier not
    run = dc.gd(problem, [w[:1] for w in ws], 0.05, int(k[0]), record=[int(k[0]) - 1, int(k[0])])
    # escape_times uses the covariance-form loss (accurate to ~eps·‖Y‖²): allow that slack
    slack = 1e-12 * problem.y_norm2
    assert run.loss[-1, 0] <= 0.5 * loss0[0] + slack
    assert run.loss[-2, 0] > 0.5 * loss0[0] - slack


def test_escape_scan_is_escape_times_of_scaled_gaussian_starts():
    from dlncore.saddles import escape_scan

    problem = _problem()
    scales = np.array([1e-3, 1e-2, 1e-1])
    threshold = 0.5 * (problem.optimal_loss(0) + problem.optimal_loss(1))
    scan = escape_scan(problem, [4, 3, 3], scales, 4, 0.05, 3000, threshold, seed=7)
    base = dc.init.gaussian([4, 3, 3], 1.0, seed=7, batch=12)
    starts = [w * np.repeat(scales, 4)[:, None, None] for w in base]
    expected = escape_times(problem, starts, 0.05, 3000, threshold=threshold)
    np.testing.assert_array_equal(scan.times.ravel(), expected)
    np.testing.assert_array_equal(scan.start_scales, np.repeat(scales, 4))
    assert scan.censored == 0
    np.testing.assert_array_equal(scan.median, np.median(scan.times, axis=1))
    # strict saddle: W grows like ε² (1 + ησ_1)^{2k}, so k ≈ log(1/ε) / log(1 + ησ_1) + const
    sigma = np.linalg.svd(problem.syx, compute_uv=False)[0]
    assert scan.log_slope() == pytest.approx(1 / np.log1p(0.05 * sigma), rel=0.1)


def test_escape_scan_fits_and_censoring():
    from dlncore.saddles import EscapeScan

    scales = np.array([0.1, 0.01, 0.001])
    times = np.array([[10.0, 12.0, 11.0], [100.0, 120.0, 110.0], [1000.0, np.nan, np.nan]])
    scan = EscapeScan(scales, times, threshold=0.5)
    assert scan.censored == 2
    np.testing.assert_array_equal(scan.median, [11.0, 110.0, np.inf])
    assert scan.power() == pytest.approx(-1.0)  # ×10 per decade of ε: k ∝ 1/ε
    assert scan.log_slope() == pytest.approx(99.0 / np.log(10.0))
    assert np.isnan(EscapeScan(scales, np.full((3, 2), np.nan), 0.5).log_slope())


@pytest.mark.parametrize(("max_steps", "message"), [(-1, "non-negative"), (2.5, "an integer")])
def test_escape_times_refuses_a_bad_budget(max_steps, message):
    problem = dc.Problem(np.array([[1.0]]), np.array([[1.0]]))
    with pytest.raises(ValueError, match=f"max_steps must be {message}"):
        escape_times(problem, [np.array([[0.1]])] * 2, 0.01, max_steps)
