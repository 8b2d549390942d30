"""Gradient descent and gradient flow against plain loops and exact identities."""

import warnings

import numpy as np
import pytest

import dlncore as dc
from dlncore.metrics import balancedness
from tests.conftest import naive_gradients, naive_loss


def textbook_gd(X, Y, weights, etas):
    weights = [w.copy() for w in weights]
    losses = [naive_loss(X, Y, weights)]
    for eta in etas:
        grads = naive_gradients(X, Y, weights)
        weights = [w - eta * g for w, g in zip(weights, grads, strict=True)]
        losses.append(naive_loss(X, Y, weights))
    return weights, np.array(losses)


def test_gd_matches_textbook_loop(problem):
    start = dc.init.gaussian([5, 3, 6, 4], 0.5, seed=1)
    run = dc.gd(problem, start, 0.02, 300, record=range(301))
    weights, losses = textbook_gd(problem.X, problem.Y, start, [0.02] * 300)
    np.testing.assert_allclose(run.loss, losses, rtol=1e-10)
    for w, e in zip(run.weights, weights, strict=True):
        np.testing.assert_allclose(w, e, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(run.iterations, np.arange(301))
    assert run.time[-1] == pytest.approx(300 * 0.02)


def test_schedule_array_and_callable_agree_with_textbook(problem):
    start = dc.init.gaussian([5, 4, 4], 0.5, seed=2)
    etas = 0.03 / (1 + 0.01 * np.arange(100))
    a = dc.gd(problem, start, etas, 100)
    b = dc.gd(problem, start, lambda k: etas[k], 100)
    weights, _ = textbook_gd(problem.X, problem.Y, start, etas)
    for wa, wb, we in zip(a.weights, b.weights, weights, strict=True):
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_allclose(wa, we, rtol=1e-10, atol=1e-12)


def test_batched_equals_looped_with_per_start_step_sizes(problem):
    start = dc.init.gaussian([5, 3, 3, 4], 0.6, seed=4, batch=5)
    etas = np.array([0.005, 0.01, 0.02, 0.04, 0.05])
    names = ["grad_norm", "path_length"]
    batched = dc.gd(problem, start, etas[None, :], 200, metrics=names)
    for b in range(5):
        single = dc.gd(problem, [w[b] for w in start], etas[b], 200, metrics=names)
        np.testing.assert_allclose(batched.loss[:, b], single.loss, rtol=1e-11)
        for name in names:
            got, want = batched.metrics[name][:, b], single.metrics[name]
            np.testing.assert_allclose(got, want, rtol=1e-10)
        for w, s in zip(batched.weights, single.weights, strict=True):
            np.testing.assert_allclose(w[b], s, rtol=1e-11, atol=1e-14)


def test_same_seed_same_bits(problem):
    runs = [
        dc.gd(problem, dc.init.gaussian([5, 3, 4], 0.5, seed=9, batch=3), 0.02, 50)
        for _ in range(2)
    ]
    assert runs[0].loss.tobytes() == runs[1].loss.tobytes()
    for a, b in zip(runs[0].weights, runs[1].weights, strict=True):
        assert a.tobytes() == b.tobytes()
    other = dc.gd(problem, dc.init.gaussian([5, 3, 4], 0.5, seed=10, batch=3), 0.02, 50)
    assert other.loss.tobytes() != runs[0].loss.tobytes()


def test_geometric_grid_contains_ends_and_is_sorted():
    grid = dc.geometric_grid(10**6, 100)
    assert grid[0] == 0 and grid[-1] == 10**6
    assert np.all(np.diff(grid) > 0) and 80 <= grid.size <= 100
    assert list(dc.geometric_grid(3, 50)) == [0, 1, 2, 3]


def test_drift_identity_holds_exactly_for_one_step(problem):
    w0 = dc.init.gaussian([5, 3, 6, 4], 0.7, seed=3)
    eta = 0.05
    grads = naive_gradients(problem.X, problem.Y, w0)
    w1 = dc.gd(problem, w0, eta, 1).weights
    for d0, d1, j in zip(balancedness(w0), balancedness(w1), range(2), strict=True):
        g_lo, g_hi = grads[j], grads[j + 1]
        np.testing.assert_allclose(d1 - d0, eta**2 * (g_hi.T @ g_hi - g_lo @ g_lo.T), atol=1e-13)


def test_flow_conserves_balancedness_and_tracks_gd(problem):
    w0 = dc.init.gaussian([5, 3, 4], 0.5, seed=6)
    flow = dc.gradient_flow(problem, w0, 2.0, metrics=["imbalance_drift"])
    assert np.max(flow.metrics["imbalance_drift"]) < 1e-9
    gaps = []
    for eta in (1e-2, 5e-3):
        run = dc.gd(problem, w0, eta, int(round(2.0 / eta)))
        diff = dc.end_to_end(run.weights) - dc.end_to_end(flow.weights)
        gaps.append(np.linalg.norm(diff))
    assert gaps[0] / gaps[1] == pytest.approx(2.0, rel=0.1)  # first order in eta
    assert flow.loss[-1] < flow.loss[0]


def test_two_layer_gd_reaches_the_global_minimum():
    problem = dc.synthetic_problem(6, 5, 40, 4, seed=3, noise=0.2)
    for width in (2, 6):  # with and without a bottleneck
        start = dc.init.gaussian([6, width, 5], 0.3, seed=1)
        run = dc.gd(problem, start, 0.05, 20000)
        assert run.loss[-1] - problem.optimal_loss(min(width, 5)) < 1e-9


def test_divergence_is_flagged_without_warnings(problem):
    start = dc.init.gaussian([5, 3, 4], 0.5, seed=1, batch=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = dc.gd(problem, start, np.array([[0.01, 50.0, 1e3]]), 500)
    np.testing.assert_array_equal(run.diverged, [False, True, True])
    assert run.diverged_at[0] == -1 and 0 < run.diverged_at[2] <= run.diverged_at[1]
    assert np.all(run.diverged_loss[1:] > 1e6 * run.loss[0, 1:])
    assert np.isnan(run.loss[-1, 1:]).all() and np.isfinite(run.loss[:, 0]).all()
    assert all(np.all(np.isfinite(w)) for w in run.weights)
    assert "2 of 3 start(s) diverged" in run.summary()


def test_single_divergent_run_stops_at_divergence(problem):
    run = dc.gd(problem, dc.init.gaussian([5, 3, 4], 0.5, seed=1), 1e3, 10**6)
    assert run.diverged and run.iterations[-1] == run.diverged_at < 100
    assert run.info["steps"] == run.diverged_at


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


def test_save_and_load_round_trip(problem, tmp_path):
    run = dc.gd(
        problem,
        dc.init.gaussian([5, 3, 4], 0.5, seed=1, batch=2),
        0.01,
        20,
        metrics=["singular_values"],
    )
    path = run.save(tmp_path / "sub" / "run.npz")
    back = dc.Run.load(path)
    np.testing.assert_array_equal(back.loss, run.loss)
    np.testing.assert_array_equal(back.metrics["singular_values"], run.metrics["singular_values"])
    assert back.info == run.info and len(back.weights) == 2
    flow = dc.gradient_flow(problem, dc.init.gaussian([5, 3, 4], 0.5, seed=1), 0.5, record=5)
    assert dc.Run.load(flow.save(tmp_path / "flow.npz")).iterations is None
