"""Tests of dlncore.stepsize.largest_convergent_step."""

from __future__ import annotations

import numpy as np
import pytest

import dlncore as dc
from dlncore.experiments.stepsize import largest_convergent_step


@pytest.fixture(scope="module")
def problem() -> dc.Problem:
    return dc.synthetic_problem(5, 3, 40, rank=2, seed=4, noise=0.1)


def test_one_layer_threshold_is_two_over_lambda_max(problem: dc.Problem) -> None:
    # For N = 1 the loss is a quadratic: GD converges iff η < 2 / λ_max(X Xᵀ).
    lam = float(np.linalg.eigvalsh(problem.sxx)[-1])
    threshold = 2.0 / lam
    ws = dc.init.gaussian([problem.d_x, problem.d_y], 0.5, seed=0)
    res = largest_convergent_step(
        problem, ws, np.geomspace(0.1, 3.0, 12) * threshold, 4000, grad_tol=1e-8, refine=2
    )
    # a finite budget can only make the empirical threshold smaller (slow contraction near 2/λ)
    assert 0.99 * threshold < res.largest < threshold
    assert res.smallest_failing < 1.01 * threshold
    assert np.all(res.diverged[res.step_sizes > 1.05 * threshold])
    assert np.all(np.isnan(res.final_loss[res.diverged]))
    assert np.all(np.diff(res.step_sizes) > 0)


def test_batched_outcome_matches_single_runs(problem: dc.Problem) -> None:
    ws = dc.init.balanced(0.3 * np.eye(problem.d_y, problem.d_x), [5, 4, 4, 3], seed=1)
    etas = np.array([0.4, 0.5, 1.0, 20.0])  # 1.0 fails without blowing up
    res = largest_convergent_step(problem, ws, etas, 3000, grad_tol=1e-4)
    for eta, ok in zip(res.step_sizes, res.converged, strict=True):
        run = dc.gd(problem, ws, float(eta), 3000, metrics=("grad_norm",))
        single = (
            not run.diverged
            and run.final_loss <= problem.loss(ws)
            and run.metrics["grad_norm"][-1] <= 1e-4
        )
        assert bool(ok) == bool(single)
    assert res.converged[0] and not res.converged[-1]
    assert not res.converged[2] and not res.diverged[2]
    assert res.largest == res.step_sizes[res.converged].max()


def test_no_convergent_step(problem: dc.Problem) -> None:
    ws = dc.init.gaussian([problem.d_x, problem.d_y], 0.5, seed=0)
    res = largest_convergent_step(problem, ws, [50.0, 100.0], 100, refine=3)
    assert np.isnan(res.largest) and res.smallest_failing == 50.0
    assert not res.converged.any()


def test_input_validation(problem: dc.Problem) -> None:
    ws = dc.init.gaussian([problem.d_x, problem.d_y], 0.5, seed=0)
    with pytest.raises(ValueError):
        largest_convergent_step(problem, ws, [], 10)
    with pytest.raises(ValueError):
        largest_convergent_step(problem, ws, [-1.0, 0.1], 10)
    with pytest.raises(ValueError):
        largest_convergent_step(problem, dc.init.gaussian([5, 3], 0.5, seed=0, batch=2), [0.1], 10)


def test_per_layer_factors_between_consecutive_depths_and_on_average():
    from dlncore.experiments.stepsize import per_layer_factors

    factors, mean = per_layer_factors([2, 3, 5], [1.0, 0.1, 0.001])
    np.testing.assert_allclose(factors, [0.1, 0.1], rtol=1e-12)  # 0.1 -> 0.001 over 2 layers
    assert mean == pytest.approx(0.1, rel=1e-12)
    factors, mean = per_layer_factors([2], [1.0])
    assert factors.size == 0 and np.isnan(mean)
