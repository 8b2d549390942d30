"""Hessian, saddles, initializations and metrics."""

import numpy as np
import pytest

import dlncore as dc


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


def test_balanced_init_is_balanced_with_the_right_product():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((4, 3)) @ rng.standard_normal((3, 6))  # rank 3
    for seed in (None, 5):
        ws = dc.init.balanced(W, [6, 3, 5, 4], seed=seed)
        np.testing.assert_allclose(dc.end_to_end(ws), W, atol=1e-12)
        assert dc.metrics.imbalance(ws) < 1e-12
        norm = np.linalg.norm(W, 2) ** (1 / 3)
        np.testing.assert_allclose([np.linalg.norm(w, 2) for w in ws], norm, rtol=1e-12)
    with pytest.raises(ValueError, match="rank"):
        dc.init.balanced(W, [6, 2, 4])


def test_batched_inits_have_the_requested_structure():
    ws = dc.init.orthogonal([4, 6, 3], seed=1, scale=0.5, batch=3)
    assert ws[0].shape == (3, 6, 4) and ws[1].shape == (3, 3, 6)
    for w in ws:
        np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), 0.5, rtol=1e-12)
    rd = dc.init.rank_deficient([5, 5, 5], rank=2, scale=1.0, seed=3, batch=4)
    assert np.all(dc.metrics.numerical_rank(rd) == 2)
    ident = dc.init.identity([3, 3, 3], scale=2.0)
    np.testing.assert_array_equal(dc.end_to_end(ident), 4 * np.eye(3))
    g = dc.init.gaussian([50, 40], 0.1, seed=2)
    assert np.std(g[0]) == pytest.approx(0.1, rel=0.05)
    near = dc.init.perturb(ident, 1e-3, seed=0)
    assert 0 < np.max(np.abs(near[0] - ident[0])) < 1e-2


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


def test_rank_k_optima_are_critical_points_with_zero_excess_loss(problem):
    ws = dc.init.balanced(problem.minimizer(2), [5, 4, 4])
    assert dc.metrics.excess_loss(problem, ws) == pytest.approx(0.0, abs=1e-12)
    assert dc.metrics.excess_loss(problem, ws, rank=3) > 1e-3
    assert dc.metrics.distance_to_minimizer(problem, ws, 2) < 1e-12
    assert dc.metrics.gradient_norm(problem, ws) < 1e-12  # a saddle of L^2: a critical point
    assert dc.metrics.gradient_norm(problem, dc.init.balanced(problem.minimizer(3), [5, 4, 4])) > 0
