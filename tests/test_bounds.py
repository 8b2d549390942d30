"""Tests of dlncore.bounds (the book's a-priori bounds) and of step_size_bound built on them."""

from __future__ import annotations

import numpy as np
import pytest

import dlncore as dc
from dlncore import bounds


@pytest.fixture(scope="module")
def problem() -> dc.Problem:
    return dc.synthetic_problem(6, 4, 60, rank=3, seed=11, noise=0.3)


def _op(a: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a, ord=2, axis=(-2, -1))


def test_imbalance_constant_table() -> None:
    assert [bounds.imbalance_constant(n) for n in range(1, 8)] == [0, 1, 3, 4, 6, 7, 9]
    with pytest.raises(ValueError):
        bounds.imbalance_constant(0)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 7])
def test_factor_bound_holds_for_random_chains(depth: int) -> None:
    rng = np.random.default_rng(depth)
    for trial in range(40):
        dims = list(rng.integers(1, 6, size=depth + 1))
        scale = float(rng.choice([0.1, 0.5, 1.0, 2.0]))
        ws = dc.init.gaussian(dims, scale, seed=trial, batch=8)
        if trial % 2:  # nearly balanced chains: the regime where the bound is nearly tight
            end = dc.end_to_end(ws)
            if min(dims) >= np.linalg.matrix_rank(end[0]):
                ws = dc.init.perturb(dc.init.balanced(end, dims, seed=trial), 1e-2, seed=trial)
        delta = dc.metrics.imbalance(ws)
        lhs = dc.metrics.max_factor_norm(ws)
        rhs = bounds.factor_bound(dc.metrics.end_to_end_norm(ws), delta, depth)
        assert np.all(lhs <= rhs * (1 + 1e-10) + 1e-12)


def test_factor_bound_is_tight_for_balanced_chains() -> None:
    rng = np.random.default_rng(0)
    end = rng.standard_normal((3, 4))
    for depth in (2, 3, 6):
        ws = dc.init.balanced(end, [4] + [5] * (depth - 1) + [3], seed=1)
        bound = bounds.factor_bound(_op(end), dc.metrics.imbalance(ws), depth)
        np.testing.assert_allclose(dc.metrics.max_factor_norm(ws), bound, rtol=1e-10)


def test_end_to_end_radius(problem: dc.Problem) -> None:
    rng = np.random.default_rng(1)
    W = rng.standard_normal((200, problem.d_y, problem.d_x)) * rng.uniform(0.01, 10, (200, 1, 1))
    loss = problem.end_to_end_loss(W)
    assert np.all(_op(W) <= bounds.end_to_end_radius(problem, loss) * (1 + 1e-12))
    # independent constants
    lam, sig, y_op = bounds.data_constants(problem)
    s = np.linalg.svd(problem.X, compute_uv=False)
    assert np.isclose(lam, s[0] ** 2) and np.isclose(sig, s[-1])
    assert np.isclose(y_op, np.linalg.svd(problem.Y, compute_uv=False)[0])


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_drift_identity_is_exact(problem: dc.Problem, depth: int) -> None:
    dims = [problem.d_x] + [5] * (depth - 1) + [problem.d_y]
    ws = dc.init.gaussian(dims, 0.7, seed=depth, batch=5)
    for eta in (1e-3, 0.05, 0.3):
        residual, change = bounds.drift_identity_residual(problem, ws, eta)
        grads = problem.gradients(ws)
        g2 = max(float(np.max(np.sum(g * g, axis=(-2, -1)))) for g in grads)
        assert np.all(residual <= 1e-12 * (1 + g2 * eta**2 + _op(ws[0]).max() ** 2))
        assert np.all(change > 0)
    # first-order terms really cancel: the change is O(η²), not O(η)
    _, c1 = bounds.drift_identity_residual(problem, ws, 1e-3)
    _, c2 = bounds.drift_identity_residual(problem, ws, 2e-3)
    np.testing.assert_allclose(c2 / c1, 4.0, rtol=1e-6)


def test_gradient_and_curvature_bounds_against_hessian(problem: dc.Problem) -> None:
    rng = np.random.default_rng(5)
    for depth in (1, 2, 3, 4):
        dims = [problem.d_x] + [3] * (depth - 1) + [problem.d_y]
        for trial in range(6):
            ws = dc.init.gaussian(dims, float(rng.uniform(0.2, 1.2)), seed=10 * depth + trial)
            b = float(dc.metrics.max_factor_norm(ws))
            loss = problem.loss(ws)
            gnorm = float(dc.metrics.gradient_norm(problem, ws))
            assert gnorm <= bounds.gradient_bound(problem, loss, b, depth) * (1 + 1e-12)
            rho = np.sqrt(2 * loss)
            ell = bounds.curvature_bound(problem, b, rho, depth)
            eig = np.linalg.eigvalsh(dc.hessian(problem, ws))
            assert np.max(np.abs(eig)) <= ell * (1 + 1e-10)


def _descent_steps(problem, ws, eta, steps):
    """Plain GD loop; returns per-step (L(k) - L(k+1)) - (eta/2)|grad|^2 and the drifts."""
    margins, drifts, losses = [], [], []
    d0 = dc.metrics.balancedness(ws)
    for _ in range(steps):
        loss, grads = problem.loss_and_gradients(ws)
        g2 = sum(float(np.sum(g * g)) for g in grads)
        ws = [w - eta * g for w, g in zip(ws, grads, strict=True)]
        new_loss = problem.loss(ws, exact=False)
        margins.append(loss - new_loss - 0.5 * eta * g2)
        losses.append(new_loss)
        pairs = zip(dc.metrics.balancedness(ws), d0, strict=True)
        drifts.append(max((float(_op(a - b)) for a, b in pairs), default=0.0))
    return np.array(margins), np.array(drifts), np.array(losses), ws


def _independent_step_size_bound(problem, ws) -> float:
    """Straight transcription of the derivation (scalar, its own constants, plain bisection)."""
    n = len(ws)
    l0 = float(problem.loss(ws))
    d0 = max(
        (float(_op(ws[j + 1].T @ ws[j + 1] - ws[j] @ ws[j].T)) for j in range(n - 1)), default=0.0
    )
    s = np.linalg.svd(problem.X, compute_uv=False)
    lam, sig = s[0] ** 2, s[-1]
    y_op = np.linalg.svd(problem.Y, compute_uv=False)[0]
    c = (n - 1) + (n - 1) // 2

    def f(eta):
        radius = (y_op + np.sqrt(2 * l0)) / sig
        b0 = np.sqrt(radius ** (2 / n) + c * (d0 + 2 * eta * l0))
        g = np.sqrt(2 * n * l0 * lam) * b0 ** (n - 1)
        b1 = b0 + eta * g
        rho = np.sqrt(2 * l0) + np.sqrt(n * lam) * b1 ** (n - 1) * eta * g
        return eta * (n * lam * b1 ** (2 * n - 2) + (n - 1) * b1 ** (n - 2) * np.sqrt(lam) * rho)

    lo, hi = 0.0, 1.0
    while f(hi) <= 1:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) <= 1 else (lo, mid)
    return lo


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_step_size_bound_matches_derivation_and_gives_descent(problem, depth) -> None:
    dims = [problem.d_x] + [4] * (depth - 1) + [problem.d_y]
    ws = dc.init.gaussian(dims, 0.4, seed=depth)
    eta = dc.step_size_bound(problem, ws)
    assert np.isclose(eta, _independent_step_size_bound(problem, ws), rtol=3e-6)
    margins, drifts, losses, _ = _descent_steps(problem, ws, eta, 300)
    l0 = problem.loss(ws)
    assert np.all(margins >= -1e-12 * l0)  # descent condition at every step
    assert np.all(drifts <= 2 * eta * (l0 - losses) + 1e-12)  # drift lemma


def test_norm_bounds_along_gd(problem) -> None:
    depth = 3
    dims = [problem.d_x, 5, 5, problem.d_y]
    ws = dc.init.gaussian(dims, 0.5, seed=2, batch=4)
    eta = dc.step_size_bound(problem, ws)
    nb = bounds.norm_bounds(problem, ws, eta)
    assert nb.factor.shape == (4,)
    np.testing.assert_allclose(nb.delta, dc.metrics.imbalance(ws) + 2 * eta * nb.loss)
    run = dc.gd(
        problem,
        ws,
        np.array([eta]),
        2000,
        metrics=("max_factor_norm", "end_to_end_norm", "imbalance_drift"),
    )
    assert np.all(run.metrics["max_factor_norm"] <= nb.factor)
    assert np.all(run.metrics["end_to_end_norm"] <= nb.radius)
    assert np.all(
        run.metrics["imbalance_drift"] <= bounds.drift_bound(eta, nb.loss, run.loss) + 1e-12
    )
    single = bounds.norm_bounds(problem, [w[0] for w in ws], float(eta[0]))
    assert np.isclose(single.factor, nb.factor[0])
    assert depth == len(ws)


def test_descent_margin_closed_form_for_one_layer(problem) -> None:
    # N = 1: L(W − ηG) = L(W) − η‖G‖² + (η²/2)‖G X‖², so the margin is (η/2)‖G‖² − (η²/2)‖GX‖².
    ws = dc.init.gaussian([problem.d_x, problem.d_y], 0.8, seed=3, batch=3)
    etas = np.array([0.1, 0.7, 2.0])
    G = problem.gradients(ws)[0]
    expected = 0.5 * etas * np.sum(G * G, axis=(1, 2)) - 0.5 * etas**2 * np.sum(
        (G @ problem.X) ** 2, axis=(1, 2)
    )
    np.testing.assert_allclose(bounds.descent_margin(problem, ws, etas), expected, rtol=1e-9)
    single = bounds.descent_margin(problem, [ws[0][1]], 0.7)
    np.testing.assert_allclose(single, expected[1], rtol=1e-9)
