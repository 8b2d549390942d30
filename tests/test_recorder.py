"""The record grid and the Recorder (through dc.gd and a step with known iterates)."""

import numpy as np
import pytest

import dlncore as dc
from dlncore.iterates import Iterates
from dlncore.recorder import Recorder, record_grid


def test_geometric_grid_contains_ends_and_is_sorted():
    grid = dc.geometric_grid(10**6, 100)
    assert grid[0] == 0 and grid[-1] == 10**6
    assert np.all(np.diff(grid) > 0) and 80 <= grid.size <= 100
    assert list(dc.geometric_grid(3, 50)) == [0, 1, 2, 3]


def test_record_grid_takes_a_count_or_the_iterations():
    np.testing.assert_array_equal(record_grid(4, 100), [0, 1, 10, 100])
    np.testing.assert_array_equal(record_grid([5, 0, 5, 7], 10), [0, 5, 7])
    with pytest.raises(ValueError, match="0..10"):
        record_grid([0, 11], 10)


def test_recorder_builds_the_run_of_known_iterates():
    # moves η W: W(k) = (1 − η)^k W(0), loss ½‖W‖², ‖∇L‖ = ‖W‖
    def shrink(weights, eta):
        return 0.5 * sum(np.sum(w * w) for w in weights), [eta * w for w in weights]

    w0 = [np.full((2, 2), 2.0)]
    metrics = ("grad_norm", "step_length", "path_length", "max_factor_norm")
    recorder = Recorder(np.array([0, 2, 5]), metrics, w0)
    it = Iterates(shrink, [w.copy() for w in w0], lambda k: np.float64(0.5), 5, np.inf)
    run = recorder.run(recorder.follow(it), "shrink", note="test")
    q = 0.5 ** np.array([0, 2, 5])  # (1 − η)^k
    np.testing.assert_array_equal(run.iterations, [0, 2, 5])
    np.testing.assert_allclose(run.time, [0.0, 1.0, 2.5])
    np.testing.assert_allclose(run.loss, 0.5 * 16 * q**2)
    np.testing.assert_allclose(run.metrics["grad_norm"], 4 * q)
    np.testing.assert_allclose(run.metrics["step_length"], [2.0, 0.5, 0.0])  # none after the last
    np.testing.assert_allclose(run.metrics["path_length"], 4 * (1 - q))  # Σ_{i<k} 2 · 2^{−i}
    np.testing.assert_allclose(run.metrics["max_factor_norm"], 4 * q)
    assert run.info["kind"] == "shrink" and run.info["note"] == "test" and run.info["steps"] == 5
    assert not run.diverged
