"""Hessian, the origin saddle, critical points and the book's step-size bound."""

import numpy as np
import pytest

import dlncore as dc


def test_step_size_bound_gives_monotone_descent():
    for seed in range(4):
        problem = dc.synthetic_problem(4, 3, 25, 2, seed=seed, noise=0.3)
        dims = [4, 3, 5, 3] if seed % 2 else [4, 3, 3]
        start = dc.init.gaussian(dims, 0.6, seed=seed)
        eta = dc.step_size_bound(problem, start)
        assert eta > 0
        run = dc.gd(problem, start, eta, 3000, record=range(3001), metrics=["imbalance_drift"])
        assert np.all(np.diff(run.loss) <= 1e-12 * run.loss[0])
        assert np.max(run.metrics["imbalance_drift"]) <= 2 * eta * run.loss[0]


def fd_hessian(problem, weights, h=1e-5):
    """Central differences of the (independently checked) analytic gradient."""
    flat = np.concatenate([w.ravel() for w in weights])
    shapes = [w.shape for w in weights]
    cuts = np.cumsum([w.size for w in weights])[:-1]

    def grad(z):
        ws = [p.reshape(s) for p, s in zip(np.split(z, cuts), shapes, strict=True)]
        return np.concatenate([g.ravel() for g in problem.gradients(ws)])

    cols = []
    for i in range(flat.size):
        e = np.zeros_like(flat)
        e[i] = h
        cols.append((grad(flat + e) - grad(flat - e)) / (2 * h))
    return np.array(cols).T


@pytest.mark.parametrize("dims", [[5, 3, 4], [5, 2, 3, 4]])
def test_hessian_matches_finite_differences(problem, dims):
    weights = dc.init.gaussian(dims, 0.6, seed=8)
    np.testing.assert_allclose(
        dc.hessian(problem, weights), fd_hessian(problem, weights), rtol=1e-6, atol=1e-6
    )


def test_origin_is_a_strict_saddle_for_two_layers_only(problem):
    sigma1 = np.linalg.norm(problem.syx, ord=2)
    zero2 = [np.zeros((3, 5)), np.zeros((4, 3))]
    eig2 = np.linalg.eigvalsh(dc.hessian(problem, zero2))
    assert eig2[0] == pytest.approx(-sigma1, rel=1e-12)
    assert eig2[-1] == pytest.approx(sigma1, rel=1e-12)
    zero3 = [np.zeros((3, 5)), np.zeros((3, 3)), np.zeros((4, 3))]
    assert np.max(np.abs(dc.hessian(problem, zero3))) == 0.0


def test_rank_k_optima_are_critical_points_with_zero_excess_loss(problem):
    ws = dc.init.balanced(problem.minimizer(2), [5, 4, 4])
    assert dc.metrics.excess_loss(problem, ws) == pytest.approx(0.0, abs=1e-12)
    assert dc.metrics.excess_loss(problem, ws, rank=3) > 1e-3
    assert dc.metrics.distance_to_minimizer(problem, ws, 2) < 1e-12
    assert dc.metrics.gradient_norm(problem, ws) < 1e-12  # a saddle of L^2: a critical point
    assert dc.metrics.gradient_norm(problem, dc.init.balanced(problem.minimizer(3), [5, 4, 4])) > 0
