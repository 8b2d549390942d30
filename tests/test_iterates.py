"""Tests of dlncore.iterates.Iterates on a step whose iterates are known in closed form."""

import numpy as np
import pytest

from dlncore.iterates import Iterates


def shrink(weights, eta):
    """Loss ½‖W‖² per start and moves η W: W(k) = (1 − η)^k W(0)."""
    loss = 0.5 * sum(np.sum(w * w, axis=(-2, -1)) for w in weights)
    return loss, [eta * w for w in weights]


def test_visits_the_stops_and_the_last_iterate_in_closed_form():
    w0 = [np.arange(6.0).reshape(2, 3), np.ones((1, 2))]
    eta = 0.1
    it = Iterates(
        shrink, [w.copy() for w in w0], lambda k: np.float64(eta), 10, np.inf, track_path=True
    )
    norm0 = np.sqrt(sum(np.sum(w * w) for w in w0))
    seen = []
    for state in it.visit([0, 3, 7]):
        k = state.k
        seen.append(k)
        for w, start in zip(state.weights, w0, strict=True):
            np.testing.assert_allclose(w, (1 - eta) ** k * start, rtol=1e-14)
        assert state.time == pytest.approx(k * eta, rel=1e-14)
        path = sum(eta * (1 - eta) ** i * norm0 for i in range(k))
        assert state.path == pytest.approx(path, rel=1e-13)
    assert seen == [0, 3, 7, 10]
    assert state.last and np.all(state.eta == 1.0)  # at k = steps: the plain gradient


def test_every_iteration_is_visited_without_stops():
    it = Iterates(shrink, [np.ones((2, 2))], lambda k: np.float64(0.5), 4, np.inf)
    assert [state.k for state in it.visit()] == [0, 1, 2, 3, 4]


def test_a_diverging_start_is_frozen_where_it_crossed_the_threshold():
    # start 0 shrinks (η = 0.5), start 1 grows by |1 − 3| = 2 per step: L_1(k) = 4^k L_1(0)
    w0 = [np.ones((2, 1, 1))]
    eta = np.array([0.5, 3.0]).reshape(2, 1, 1)
    it = Iterates(shrink, [w.copy() for w in w0], lambda k: eta, 20, 100.0)
    ks = [state.k for state in it.visit([5])]  # the same object, visited twice
    # L_1(k) = ½ 4^k > 100 first at k = 4 (½ 4^4 = 128): frozen at W = (−2)^4
    assert it.diverged_at.tolist() == [-1, 4]
    assert it.diverged_loss[1] == 128.0
    assert it.active.tolist() == [True, False]
    assert it.weights[0][1, 0, 0] == 16.0
    assert it.weights[0][0, 0, 0] == 0.5**20
    assert ks == [5, 20]


def test_all_diverged_ends_the_iteration():
    it = Iterates(shrink, [np.ones((1, 1))], lambda k: np.float64(3.0), 50, 10.0)
    ks = [state.k for state in it.visit([40])]
    assert ks == [3] and it.last  # ½ 4^3 = 32 > 10
    assert it.diverged_at == 3 and np.all(it.moves[0] == 0)


def test_descent_margins_of_every_step_in_closed_form():
    # start 0 (η = 0.5): margin of step i is ½‖W(i)‖²(η − η²) = ½ 4^{−i} · 0.25 > 0;
    # start 1 (η = 3) grows: ½ 4^i (1 − 4 − 3) < 0 until it diverges at k = 4 (then NaN)
    w0 = [np.ones((2, 1, 1))]
    eta = np.array([0.5, 3.0]).reshape(2, 1, 1)
    it = Iterates(shrink, [w.copy() for w in w0], lambda k: eta, 6, 100.0, track_descent=True)
    seen = {}
    for state in it.visit([0, 6]):
        seen[state.k] = state.descent.copy(), state.descent_min.copy()
    assert np.isnan(seen[0][0]).all() and np.isinf(seen[0][1]).all()
    shrinking = [0.5 * 0.25**i * 0.25 for i in range(6)]
    growing = [0.5 * 4.0**i * (1 - 4 - 3) for i in range(4)]  # steps 0..3 (into k = 1..4)
    np.testing.assert_allclose(seen[6][0], [shrinking[5], np.nan], rtol=1e-14)
    np.testing.assert_allclose(seen[6][1], [shrinking[5], min(growing)], rtol=1e-14)


def test_descent_margins_do_not_change_the_iterates():
    w0 = [np.arange(6.0).reshape(2, 3), np.ones((1, 2))]
    runs = []
    for track in (False, True):
        it = Iterates(shrink, [w.copy() for w in w0], lambda k: np.float64(0.1), 9, np.inf)
        it.track_descent = track
        runs.append([(s.k, s.loss, s.weights[0].copy()) for s in it.visit([0, 4])])
    for (ka, la, wa), (kb, lb, wb) in zip(*runs, strict=True):
        assert ka == kb and la == lb and np.array_equal(wa, wb)
