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
