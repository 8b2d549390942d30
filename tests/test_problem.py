"""Loss, gradients and optimal values against independent computations; bad data."""

import numpy as np
import pytest
from scipy.optimize import minimize

import dlncore as dc
from tests.conftest import central_differences, naive_gradients, naive_loss

SHAPES = [
    [5, 4],  # N = 1
    [5, 3, 4],  # N = 2, bottleneck
    [5, 6, 7, 4],  # N = 3, wide
    [5, 2, 6, 3, 4],  # N = 4, bottleneck of width 2
]


@pytest.mark.parametrize("dims", SHAPES)
def test_gradients_match_central_differences(problem, dims):
    weights = dc.init.gaussian(dims, 0.7, seed=3)
    grads = problem.gradients(weights)
    fds = central_differences(lambda ws: naive_loss(problem.X, problem.Y, ws), weights)
    for j, fd in enumerate(fds):
        np.testing.assert_allclose(grads[j], fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dims", SHAPES)
def test_gradients_match_backprop_through_samples(problem, dims):
    weights = dc.init.gaussian(dims, 0.9, seed=5)
    expected = naive_gradients(problem.X, problem.Y, weights)
    for g, e in zip(problem.gradients(weights), expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-11, atol=1e-12)


def test_batched_loss_and_gradients_equal_per_start(problem):
    batch = dc.init.gaussian([5, 3, 6, 4], 0.8, seed=7, batch=6)
    losses = problem.loss(batch)
    grads = problem.gradients(batch)
    assert losses.shape == (6,)
    for b in range(6):
        single = [w[b] for w in batch]
        assert losses[b] == pytest.approx(naive_loss(problem.X, problem.Y, single), rel=1e-12)
        for g, e in zip(grads, naive_gradients(problem.X, problem.Y, single), strict=True):
            np.testing.assert_allclose(g[b], e, rtol=1e-11, atol=1e-12)


def test_covariance_loss_agrees_with_exact_loss(problem):
    weights = dc.init.gaussian([5, 3, 4], 1.0, seed=2)
    exact = naive_loss(problem.X, problem.Y, weights)
    assert problem.loss(weights) == pytest.approx(exact, rel=1e-12)
    assert problem.loss(weights, exact=False) == pytest.approx(exact, rel=1e-10)


def _best_rank_k_by_optimization(problem, k, restarts=6):
    """min ½‖UVᵀX − Y‖² over U (d_y × k), V (d_x × k), by BFGS from several random starts."""
    rng = np.random.default_rng(0)
    d_y, d_x = problem.d_y, problem.d_x

    def f(z):
        U, V = z[: d_y * k].reshape(d_y, k), z[d_y * k :].reshape(d_x, k)
        R = U @ V.T @ problem.X - problem.Y
        gW = R @ problem.X.T
        return 0.5 * np.sum(R * R), np.concatenate([(gW @ V).ravel(), (gW.T @ U).ravel()])

    best = np.inf
    for _ in range(restarts):
        z0 = rng.standard_normal((d_y + d_x) * k)
        res = minimize(f, z0, jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 5000})
        best = min(best, res.fun)
    return best


@pytest.mark.parametrize("k", [1, 2, 3])
def test_optimal_loss_matches_low_rank_optimization(problem, k):
    assert problem.optimal_loss(k) == pytest.approx(
        _best_rank_k_by_optimization(problem, k), rel=1e-7, abs=1e-10
    )


def test_optimal_loss_extremes_and_minimizer(problem):
    assert problem.optimal_loss(0) == pytest.approx(0.5 * np.sum(problem.Y**2), rel=1e-13)
    W_ls = np.linalg.lstsq(problem.X.T, problem.Y.T, rcond=None)[0].T
    full = problem.max_rank
    assert problem.optimal_loss(full) == pytest.approx(
        0.5 * np.sum((W_ls @ problem.X - problem.Y) ** 2), rel=1e-12
    )
    for k in range(full + 1):
        Wk = problem.minimizer(k)
        assert np.linalg.matrix_rank(Wk) == k
        assert problem.end_to_end_loss(Wk) == pytest.approx(problem.optimal_loss(k), rel=1e-11)


def test_optimal_loss_is_exactly_zero_scale_for_a_noiseless_teacher():
    problem = dc.synthetic_problem(6, 6, 40, 6, seed=1)
    assert 0 <= problem.optimal_loss(6) < 1e-25


def test_critical_values_by_brute_force(problem):
    s = problem.q_singular_values
    total = 0.5 * np.sum(problem.Y**2)
    expected = sorted({total - 0.5 * (s[i] ** 2 + s[j] ** 2) for i in range(4) for j in range(i)})
    np.testing.assert_allclose(problem.critical_values(2), expected, rtol=1e-12)
    assert problem.critical_values(2)[0] == pytest.approx(problem.optimal_loss(2), rel=1e-12)


def test_q_singular_values_are_those_of_the_whitened_cross_covariance(problem):
    w, V = np.linalg.eigh(problem.X @ problem.X.T)
    Q = problem.Y @ problem.X.T @ V @ np.diag(w**-0.5) @ V.T
    np.testing.assert_allclose(problem.q_singular_values, np.linalg.svd(Q, compute_uv=False))


def test_float32_problem_keeps_float32_weights():
    problem = dc.synthetic_problem(4, 3, 20, 2, seed=0, dtype=np.float32)
    weights = dc.init.gaussian([4, 3, 3], 0.5, seed=1)
    run = dc.gd(problem, weights, 0.05, 10)
    assert all(w.dtype == np.float32 for w in run.weights)


RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 20))
Y = RNG.standard_normal((3, 20))


@pytest.mark.parametrize(
    ("X", "Y", "message"),
    [
        (X[0], Y, "must be matrices"),
        (X, Y[:, :10], "X has 20 samples .* Y has 10"),
        (np.where(X > 1, np.nan, X), Y, "X has non-finite"),
        (X, np.where(Y > 1, np.inf, Y), "Y has non-finite"),
        (X[:, :3], Y[:, :3], r"singular: X has m = 3 samples for d_x = 4"),
        (np.vstack([X[:3], X[:1]]), Y, r"numerically singular .*m = 20, d_x = 4"),
    ],
)
def test_bad_data(X, Y, message):
    with pytest.raises(ValueError, match=message):
        dc.Problem(X, Y)


def test_bad_ranks_and_metric_names(small):
    for rank in (-1, 4, 1.5):
        with pytest.raises(ValueError, match="rank"):
            small.optimal_loss(rank)
    with pytest.raises(ValueError, match="unknown metric 'loss_rate'"):
        dc.gd(small, dc.init.gaussian([4, 3], 0.1, seed=0), 0.1, 1, metrics=["loss_rate"])
    with pytest.raises(ValueError, match="t_final"):
        dc.gradient_flow(small, dc.init.gaussian([4, 3], 0.1, seed=0), -1.0)
