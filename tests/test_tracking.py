"""Tests of dlncore.tracking against plain loops, scipy and the balancedness identity."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import dlncore as dc
from dlncore.experiments.tracking import gd_flow_gap, imbalance_increment


def _problem_and_start(seed: int = 0):
    problem = dc.synthetic_problem(4, 3, 12, 2, seed=seed)
    weights = dc.init.gaussian([4, 3, 5, 3], 0.5, seed=seed + 1)
    return problem, weights


def _textbook_gd(problem, weights, eta, steps):
    ws = [w.copy() for w in weights]
    X, Y = problem.X, problem.Y
    for _ in range(steps):
        W = ws[2] @ ws[1] @ ws[0]
        E = (W @ X - Y) @ X.T
        g = [(ws[2] @ ws[1]).T @ E, ws[2].T @ E @ ws[0].T, E @ (ws[1] @ ws[0]).T]
        ws = [w - eta * gj for w, gj in zip(ws, g, strict=True)]
    return ws


def test_imbalance_increment_is_one_step_change():
    problem, weights = _problem_and_start()
    for eta in (0.3, 0.05):
        after = _textbook_gd(problem, weights, eta, 1)
        predicted = imbalance_increment(problem, weights, eta)
        for d1, d0, inc in zip(
            dc.metrics.balancedness(after), dc.metrics.balancedness(weights), predicted, strict=True
        ):
            assert np.allclose(d1 - d0, inc, rtol=1e-10, atol=1e-13)
            assert np.linalg.norm(inc) > 1e-6  # a real, non-trivial change


def test_first_order_terms_cancel():
    problem, weights = _problem_and_start(3)
    grads = problem.gradients(weights)
    for j in range(len(weights) - 1):
        assert np.allclose(grads[j] @ weights[j].T, weights[j + 1].T @ grads[j + 1], atol=1e-12)


def test_gd_flow_gap_against_separate_runs():
    problem, weights = _problem_and_start(1)
    t_final, counts = 1.0, [20, 40, 80]
    gap = gd_flow_gap(problem, weights, t_final, counts, num_times=4, metrics=("imbalance_drift",))
    flat = lambda ws: np.concatenate([w.ravel() for w in ws])  # noqa: E731

    def rhs(_t, y):
        ws = [y[:12].reshape(3, 4), y[12:27].reshape(5, 3), y[27:].reshape(3, 5)]
        return -flat(problem.gradients(ws))

    times = np.linspace(0, t_final, 5)
    sol = solve_ivp(rhs, (0, t_final), flat(weights), t_eval=times, rtol=1e-12, atol=1e-14)
    for b, n in enumerate(counts):
        eta = t_final / n
        for i, t in enumerate(times):
            ws = _textbook_gd(problem, weights, eta, int(round(t / eta)))
            expected = np.linalg.norm(flat(ws) - sol.y[:, i])
            assert gap.gap_factors[b, i] == pytest.approx(expected, rel=1e-6, abs=1e-9)
            w_flow = sol.y[27:, i].reshape(3, 5) @ sol.y[12:27, i].reshape(5, 3)
            w_flow = w_flow @ sol.y[:12, i].reshape(3, 4)
            e2e = np.linalg.norm(ws[2] @ ws[1] @ ws[0] - w_flow)
            assert gap.gap_end_to_end[b, i] == pytest.approx(e2e, rel=1e-6, abs=1e-9)
    assert gap.gap_factors[:, 0].max() == 0.0
    assert gap.flow_error < 1e-7
    # first order: halving η roughly halves the gap
    ratios = gap.max_gap_factors[:-1] / gap.max_gap_factors[1:]
    assert np.all((ratios > 1.7) & (ratios < 2.3))
    # the flow conserves balancedness to its tolerance
    assert gap.flow_run.metrics["imbalance_drift"].max() < 1e-8


def test_gd_flow_gap_rejects_bad_counts():
    problem, weights = _problem_and_start()
    with pytest.raises(ValueError, match="multiple"):
        gd_flow_gap(problem, weights, 1.0, [10, 15], num_times=10)


def test_gd_flow_gap_reports_diverging_step_sizes():
    problem, weights = _problem_and_start(1)
    # T = 20: η = 1 diverges at iteration 5 (t = 5), η = 0.5 and 0.05 converge
    gap = gd_flow_gap(problem, weights, 20.0, [20, 40, 400], num_times=4)
    np.testing.assert_array_equal(gap.diverged, [True, False, False])
    np.testing.assert_array_equal(gap.diverged_at, [5, -1, -1])
    np.testing.assert_array_equal(gap.diverged_time, [5.0, np.nan, np.nan])
    alone = dc.gd(problem, weights, 1.0, 20)
    assert gap.diverged_loss[0] == alone.diverged_loss and np.isnan(gap.diverged_loss[1:]).all()
    # distances exist up to the divergence (t_0, t_1) and not after it
    assert np.isfinite(gap.gap_factors[0, :2]).all() and np.isnan(gap.gap_factors[0, 2:]).all()
    assert np.isnan(gap.max_gap_end_to_end[0]) and np.isnan(gap.max_gap_factors[0])
    rest = gd_flow_gap(problem, weights, 20.0, [40, 400], num_times=4)
    np.testing.assert_allclose(gap.gap_factors[1:], rest.gap_factors, rtol=1e-12, atol=1e-15)
    assert "1 of 3 step sizes diverged" in gap.summary()


def test_gd_flow_gap_when_every_step_size_diverges():
    problem, weights = _problem_and_start(1)
    gap = gd_flow_gap(problem, weights, 20.0, [8, 20], num_times=4)  # η = 2.5 and 1
    assert gap.diverged.all() and np.all(gap.diverged_at > 0)
    assert np.all(gap.diverged_time == gap.diverged_at * gap.step_sizes)
    assert np.all(gap.diverged_loss > 1e6 * problem.loss(weights))
    assert np.isnan(gap.max_gap_factors).all() and gap.gap_factors[:, 0].tolist() == [0.0, 0.0]


def test_values_at_the_horizon_per_step_size():
    problem, weights = _problem_and_start(1)
    gap = gd_flow_gap(problem, weights, 20.0, [20, 40, 400], num_times=4, metrics=["imbalance"])
    for b, eta in ((1, 0.5), (2, 0.05)):
        alone = dc.gd(problem, weights, eta, int(round(20 / eta)), metrics=["imbalance"])
        assert gap.at_horizon("loss")[b] == pytest.approx(alone.loss[-1], rel=1e-10)
        want = alone.metrics["imbalance"][-1]
        assert gap.at_horizon("imbalance")[b] == pytest.approx(want, rel=1e-10)
    assert np.isnan(gap.at_horizon("loss")[0])  # η = 1 diverged before T
