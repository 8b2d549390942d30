"""Gradient flow: conserved balancedness and first-order agreement with GD."""

import numpy as np
import pytest

import dlncore as dc
from dlncore.flow import record_times


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


def test_record_times_is_a_count_or_the_times():
    np.testing.assert_allclose(record_times(6, 2.0), [0, 2e-4, 2e-3, 2e-2, 0.2, 2.0], rtol=1e-12)
    np.testing.assert_array_equal(record_times([1.0, 0, 1.0, 0.5], 1.0), [0, 0.5, 1.0])
    for record, message in [(1, "at least 2"), ([-1.0, 1.0], "lie in"), ([0, 3.0], "lie in")]:
        with pytest.raises(ValueError, match=message):
            record_times(record, 2.0)


@pytest.mark.parametrize("t_final", [0.0, -1.0, np.nan, np.inf])
def test_bad_horizon_is_refused_before_integrating(small, t_final):
    with pytest.raises(ValueError, match="positive and finite"):
        dc.gradient_flow(small, dc.init.gaussian([4, 3], 0.1, seed=0), t_final)


@pytest.mark.parametrize("name", ["path_length", "step_length"])
def test_step_metrics_other_than_grad_norm_are_refused(small, name):
    with pytest.raises(ValueError, match=f"{name}.*not available"):
        dc.gradient_flow(small, dc.init.gaussian([4, 2, 3], 0.1, seed=0), 1.0, metrics=[name])


def test_flow_records_the_metrics_in_the_order_asked_against_independent_values(problem):
    w0 = dc.init.gaussian([5, 3, 4], 0.5, seed=6, batch=2)
    names = ["imbalance", "grad_norm", "end_to_end_norm"]
    flow = dc.gradient_flow(problem, w0, 0.5, record=4, metrics=names)
    assert list(flow.metrics) == names and flow.metrics["grad_norm"].shape == (4, 2)
    np.testing.assert_allclose(
        flow.metrics["grad_norm"][-1], dc.metrics.gradient_norm(problem, flow.weights), rtol=1e-12
    )
    assert flow.info["widths"] == [5, 3, 4] and flow.info["batch"] == 2
    assert not flow.diverged.any() and flow.diverged.shape == (2,)
